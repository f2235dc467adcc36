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
