//! Reads of past work: an account's generations paged by id with their
//! ratings, and the most recent failures (admin views).

use serde::Serialize;

use crate::db::{Store, StoreError, safe, with_pool};
use crate::jobs::{JOB_COLUMNS, JobRow, JobStatus};

/// One page of an account's generations, filtered.
#[derive(Debug, Clone, Default)]
pub struct GenerationFilter {
    /// Owner (required: the API never lists across accounts here).
    pub account_id: String,
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this tool.
    pub tool_id: Option<String>,
    /// Jobs strictly older than this job id (ids are UUIDv7, time-ordered).
    pub before_id: Option<String>,
    /// Include jobs the owner hid.
    pub include_hidden: bool,
    /// Only jobs whose parameters contain this text (case-insensitive for
    /// ASCII letters; `%`, `_` and `\` match themselves).
    pub text: Option<String>,
    /// Only jobs created at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only jobs whose parameters name this model file (a parameter whose
    /// whole value is this text, such as `"model": "sdxl.safetensors"`).
    pub model: Option<String>,
    /// Page size (clamped to 1..=200).
    pub limit: i64,
}

/// A job with the owner's rating.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RatedJob {
    /// The job.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub job: JobRow,
    /// 1–5 stars, when rated.
    pub rating: Option<i64>,
}

impl Store {
    /// An account's generations, newest first, without hidden ones unless asked.
    pub async fn list_generations(&self, f: &GenerationFilter) -> Result<Vec<RatedJob>, StoreError> {
        let cols = JOB_COLUMNS.split(", ").map(|c| format!("j.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let mut sql = format!(
            "SELECT {cols}, (SELECT m.rating FROM job_marks m WHERE m.job_id = j.id) AS rating FROM jobs j \
                     WHERE j.account_id = $1"
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.status.is_some() {
            sql += &format!(" AND j.status = {}", next());
        }
        if f.tool_id.is_some() {
            sql += &format!(" AND j.tool_id = {}", next());
        }
        if f.before_id.is_some() {
            sql += &format!(" AND j.id < {}", next());
        }
        let escape = |t: &str| -> String {
            t.chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect()
        };
        let pattern = f.text.as_deref().map(|t| format!("%{}%", escape(t)));
        // SQLite's LIKE ignores ASCII case; PostgreSQL needs ILIKE.
        let like = if self.backend() == crate::Backend::Postgres { "ILIKE" } else { "LIKE" };
        if pattern.is_some() {
            sql += &format!(" AND j.params {like} {} ESCAPE '\\'", next());
        }
        // The model as a whole JSON string value: its name in quotes (JSON
        // escapes neither letters, digits nor `.-_ /` of file names).
        let model = f.model.as_deref().map(|m| {
            let quoted = serde_json::to_string(m).unwrap_or_default();
            format!("%:{}%", escape(&quoted))
        });
        if model.is_some() {
            sql += &format!(" AND j.params {like} {} ESCAPE '\\'", next());
        }
        if f.since.is_some() {
            sql += &format!(" AND j.created_at >= {}", next());
        }
        if !f.include_hidden {
            sql += " AND NOT EXISTS (SELECT 1 FROM job_marks h WHERE h.job_id = j.id AND h.hidden)";
        }
        sql += &format!(" ORDER BY j.id DESC LIMIT {}", next());
        with_pool!(self, p => {
            let mut q = sqlx::query_as::<_, RatedJob>(safe(&sql)).bind(&f.account_id);
            if let Some(s) = f.status { q = q.bind(s.as_str()); }
            if let Some(t) = &f.tool_id { q = q.bind(t); }
            if let Some(b) = &f.before_id { q = q.bind(b); }
            if let Some(t) = &pattern { q = q.bind(t); }
            if let Some(m) = &model { q = q.bind(m); }
            if let Some(s) = f.since { q = q.bind(s); }
            Ok(q.bind(f.limit.clamp(1, 200)).fetch_all(p).await?)
        })
    }

    /// The most recently failed jobs, newest first.
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'failed' ORDER BY finished_at DESC, id DESC LIMIT $1"
            )))
            .bind(limit.clamp(1, 200))
            .fetch_all(p)
            .await?)
        })
    }
}
