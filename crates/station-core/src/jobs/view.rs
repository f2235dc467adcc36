//! How a job looks to the people waiting for it: its row with the queue
//! position and an ETA learnt from recent runs of the same tool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use station_store::{JobRow, JobStatus, StoreError};

use crate::Station;

/// A job with its queue position and estimated start.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// The stored job.
    #[serde(flatten)]
    pub row: JobRow,
    /// Queued jobs that will be claimed before this one (queued jobs only).
    pub queue_position: Option<i64>,
    /// Estimated milliseconds until it finishes (queued or running jobs).
    pub eta_ms: Option<i64>,
}

impl JobView {
    /// Prompts ahead of the job in its backend's own queue, while it waits
    /// there (status `dispatched`); None otherwise or when not known yet.
    pub fn backend_ahead(&self) -> Option<i64> {
        (self.row.status() == JobStatus::Dispatched).then_some(self.row.backend_ahead).flatten()
    }

    /// Where the job stands, in words for a person — the one wording every
    /// front end shows: "queued, 2 ahead", "waiting for a GPU (3 ahead)"
    /// (sent to a backend that has not started it: `dispatched`), "running
    /// 45 %", "done", "failed", "cancelled".
    pub fn status_text(&self) -> String {
        status_text(&self.row, self.queue_position)
    }
}

/// [`JobView::status_text`] for a row and its Station queue position.
pub fn status_text(row: &JobRow, queue_position: Option<i64>) -> String {
    match row.status() {
        JobStatus::Queued => match queue_position {
            Some(0) | None => "queued, starting soon".to_string(),
            Some(n) => format!("queued, {n} ahead"),
        },
        JobStatus::Dispatched => match row.backend_ahead {
            Some(n) if n > 0 => format!("waiting for a GPU ({n} ahead)"),
            _ => "waiting for a GPU".to_string(),
        },
        JobStatus::Running => format!("running {:.0} %", (row.progress * 100.0).clamp(0.0, 100.0).floor()),
        JobStatus::Succeeded => "done".to_string(),
        JobStatus::Failed => "failed".to_string(),
        JobStatus::Cancelled => "cancelled".to_string(),
    }
}

/// A job's view with the owner's mark, as a status read shows it.
#[derive(Debug, Clone)]
pub struct JobStatusView {
    /// Row, queue position and ETA.
    pub view: JobView,
    /// The owner's rating, 1–5.
    pub rating: Option<i64>,
    /// Hidden from the owner's history.
    pub hidden: bool,
}

/// How long a tool's recent run times are reused for ETAs.
pub const ETA_CACHE_TTL: Duration = Duration::from_secs(1);

/// Recent mean run time per tool (for ETAs), kept [`ETA_CACHE_TTL`] per
/// process: an ETA is an estimate, and polling clients would otherwise
/// read the same 20 rows on every status request.
#[derive(Debug, Clone, Default)]
pub struct EtaCache(Arc<Mutex<HashMap<String, EtaEntry>>>);

/// When a tool's mean run time was read, and what it was.
type EtaEntry = (Instant, Option<f64>);

impl EtaCache {
    fn get(&self, tool_id: &str) -> Option<Option<f64>> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(tool_id).filter(|(at, _)| at.elapsed() < ETA_CACHE_TTL).map(|(_, avg)| *avg)
    }

    fn put(&self, tool_id: &str, avg: Option<f64>) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Tools are few; stale entries of removed tools are dropped when the map grows.
        if map.len() > 1_024 {
            map.retain(|_, (at, _)| at.elapsed() < ETA_CACHE_TTL);
        }
        map.insert(tool_id.to_string(), (Instant::now(), avg));
    }
}

impl Station {
    /// A job with its queue position and ETA.
    pub async fn job_view(&self, job_id: &str) -> Result<Option<JobView>, StoreError> {
        Ok(self.job_status(job_id).await?.map(|s| s.view))
    }

    /// [`Station::job_view`] with the owner's mark (rating, hidden): one
    /// query for the row, the mark and a queued job's position; the ETA's
    /// recent run times come from [`EtaCache`] and are read only for queued
    /// or running jobs.
    pub async fn job_status(&self, job_id: &str) -> Result<Option<JobStatusView>, StoreError> {
        let Some(s) = self.store.job_status(job_id).await? else { return Ok(None) };
        let position = s.queue_position();
        let row = s.job;
        let (queue_position, eta_ms) = match row.status() {
            JobStatus::Queued => {
                let avg = self.recent_run_ms(&row.tool_id).await?;
                let pos = position.unwrap_or(station_store::QueuePosition { ahead: 0, running: 0 });
                let slots = self.slots_for(&row.service).max(1) as f64;
                let eta = avg.map(|a| (((pos.ahead + pos.running) as f64 / slots) + 1.0) * a);
                (Some(pos.ahead), eta.map(|e| e as i64))
            }
            JobStatus::Dispatched | JobStatus::Running => {
                let avg = self.recent_run_ms(&row.tool_id).await?;
                (None, avg.map(|a| (a * (1.0 - row.progress)).max(0.0) as i64))
            }
            _ => (None, None),
        };
        Ok(Some(JobStatusView {
            view: JobView { row, queue_position, eta_ms },
            rating: s.mark_rating,
            hidden: s.mark_hidden,
        }))
    }

    /// Mean run time of the tool's last 20 successful jobs, read at most
    /// once per [`ETA_CACHE_TTL`] per tool in this process.
    async fn recent_run_ms(&self, tool_id: &str) -> Result<Option<f64>, StoreError> {
        if let Some(avg) = self.eta_cache.get(tool_id) {
            return Ok(avg);
        }
        let avg = self.store.recent_run_ms(tool_id, 20).await?;
        self.eta_cache.put(tool_id, avg);
        Ok(avg)
    }

    fn slots_for(&self, service: &str) -> usize {
        self.executors
            .read()
            .expect("executors lock")
            .iter()
            .find(|e| e.service() == service)
            .map(|e| e.capacity())
            .unwrap_or(1)
    }
}
