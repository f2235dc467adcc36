//! ComfyUI backends added at run time, and the jobs in flight on each.

use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// A backend added at run time.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct BackendRow {
    /// Unique name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Prompts it may run at once.
    pub max_concurrent: i64,
    /// Tags as JSON array text.
    pub tags: String,
    /// When added.
    pub created_at: i64,
}

/// Jobs in flight on one backend.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, PartialEq, Eq)]
pub struct BackendLoad {
    /// Service (`comfyui`, `media`).
    pub service: String,
    /// Backend name (empty for jobs not yet sent anywhere).
    pub backend: String,
    /// Dispatched or running jobs.
    pub active: i64,
}

impl Store {
    /// Backends added at run time.
    pub async fn list_backends(&self) -> Result<Vec<BackendRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as("SELECT name, url, max_concurrent, tags, created_at FROM backends ORDER BY name")
                .fetch_all(p)
                .await?)
        })
    }

    /// Adds or replaces a run-time backend.
    pub async fn upsert_backend(&self, b: &BackendRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO backends (name, url, max_concurrent, tags, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, max_concurrent = excluded.max_concurrent, tags = excluded.tags",
            )
            .bind(&b.name).bind(&b.url).bind(b.max_concurrent).bind(&b.tags).bind(b.created_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Removes a run-time backend; true if it existed.
    pub async fn remove_backend(&self, name: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("DELETE FROM backends WHERE name = $1").bind(name).execute(p).await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Dispatched and running jobs per service and backend.
    pub async fn backend_load(&self) -> Result<Vec<BackendLoad>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT service, COALESCE(backend, '') AS backend, COUNT(*) AS active FROM jobs \
                 WHERE status IN ('dispatched', 'running') GROUP BY service, COALESCE(backend, '') \
                 ORDER BY service, backend",
            )
            .fetch_all(p)
            .await?)
        })
    }
}

/// A prompt left on a backend that must not run (its job moved on).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, PartialEq, Eq)]
pub struct RemoteCancel {
    /// Backend name.
    pub backend: String,
    /// The backend's prompt id.
    pub remote_id: String,
    /// The job it was sent for.
    pub job_id: String,
    /// When it was recorded.
    pub created_at: i64,
}

/// Records the job's current prompt as one to cancel, in a transaction that
/// is moving the job on (the caller's fence already applied).
pub(crate) const REMEMBER_CURRENT_PROMPT_SQL: &str = "INSERT INTO remote_cancels (backend, remote_id, job_id, created_at) \
     SELECT backend, remote_id, id, $2 FROM jobs WHERE id = $1 AND backend IS NOT NULL AND remote_id IS NOT NULL \
     ON CONFLICT (backend, remote_id) DO NOTHING";

impl Store {
    /// Prompts to cancel on `backend` (all backends when None), oldest
    /// first. A prompt that is again the current one of an unfinished job
    /// is never listed.
    pub async fn remote_cancels(&self, backend: Option<&str>) -> Result<Vec<RemoteCancel>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT rc.backend, rc.remote_id, rc.job_id, rc.created_at FROM remote_cancels rc \
                 WHERE ($1 IS NULL OR rc.backend = $1) AND NOT EXISTS (SELECT 1 FROM jobs j \
                   WHERE j.backend = rc.backend AND j.remote_id = rc.remote_id \
                   AND j.status IN ('queued','dispatched','running')) \
                 ORDER BY rc.created_at, rc.remote_id LIMIT 500",
            )
            .bind(backend)
            .fetch_all(p)
            .await?)
        })
    }

    /// The prompt was cancelled on its backend (or found gone): forget it.
    pub async fn remote_cancel_done(&self, backend: &str, remote_id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM remote_cancels WHERE backend = $1 AND remote_id = $2")
                .bind(backend)
                .bind(remote_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
