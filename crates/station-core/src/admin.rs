//! Operator views: the queue and the backends at a glance, and finding an
//! account from what an operator types. Shared by every admin surface (the
//! chat `/queue` and `/grant` commands; the REST admin endpoints compute the
//! same from the same store calls).

use std::collections::BTreeMap;

use station_store::{AccountRow, JobFilter, JobRow, JobStatus, StoreError};

use crate::Station;

/// One backend of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendHealth {
    /// Name.
    pub name: String,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// What the health check said.
    pub detail: String,
    /// Jobs dispatched to or running on it now (all Station processes).
    pub active: i64,
}

/// One service (`comfyui`, `media`) with its backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceHealth {
    /// Service name.
    pub service: String,
    /// Jobs this process may run at once now.
    pub capacity: usize,
    /// Dispatched or running jobs of this service (all processes).
    pub active: i64,
    /// Its backends (none for the native media service).
    pub backends: Vec<BackendHealth>,
}

/// The queue at a glance.
#[derive(Debug, Clone)]
pub struct QueueOverview {
    /// Jobs waiting for a worker.
    pub depth: i64,
    /// Jobs per status.
    pub by_status: BTreeMap<String, i64>,
    /// Creation time of the oldest queued job (Unix ms).
    pub oldest_queued_at: Option<i64>,
    /// How long the oldest queued job has waited (ms).
    pub oldest_queued_age_ms: Option<i64>,
    /// Dispatched and running jobs, oldest first (the newest ones up to the
    /// limit asked for).
    pub running: Vec<JobRow>,
}

impl Station {
    /// Every registered service with its capacity, load and backends' health.
    pub async fn service_health(&self) -> Result<Vec<ServiceHealth>, StoreError> {
        let load = self.store.backend_load().await?;
        let executors = self.executors.read().expect("executors lock").clone();
        let mut services = vec![];
        for ex in executors {
            let service = ex.service().to_string();
            let backends = ex
                .health()
                .await
                .into_iter()
                .map(|(name, healthy, detail)| {
                    let active =
                        load.iter().filter(|l| l.service == service && l.backend == name).map(|l| l.active).sum();
                    BackendHealth { name, healthy, detail, active }
                })
                .collect();
            let active = load.iter().filter(|l| l.service == service).map(|l| l.active).sum();
            services.push(ServiceHealth { service, capacity: ex.capacity(), active, backends });
        }
        Ok(services)
    }

    /// Queue depth, the oldest queued job's age and up to `running_limit`
    /// dispatched or running jobs.
    pub async fn queue_overview(&self, running_limit: i64) -> Result<QueueOverview, StoreError> {
        let stats = self.store.queue_stats().await?;
        let by_status: BTreeMap<String, i64> = stats.by_status.into_iter().collect();
        let mut running = vec![];
        for status in [JobStatus::Running, JobStatus::Dispatched] {
            let f = JobFilter { status: Some(status), limit: running_limit.max(1), ..Default::default() };
            running.extend(self.store.list_jobs(&f).await?);
        }
        running.sort_by_key(|j| j.created_at);
        running.truncate(running_limit.max(0) as usize);
        Ok(QueueOverview {
            depth: by_status.get("queued").copied().unwrap_or(0),
            by_status,
            oldest_queued_at: stats.oldest_queued_at,
            oldest_queued_age_ms: stats.oldest_queued_at.map(|t| (station_store::now_ms() - t).max(0)),
            running,
        })
    }

    /// The account an operator means: `provider:subject` (a platform identity
    /// such as `telegram:123`) or an account id (a linked-away id gives the
    /// account it was joined into). Never creates an account.
    pub async fn find_account(&self, who: &str) -> Result<Option<AccountRow>, StoreError> {
        let who = who.trim();
        if let Some((provider, subject)) = who.split_once(':')
            && !provider.is_empty()
            && !subject.is_empty()
        {
            return self.store.find_account_by_identity(provider, subject).await;
        }
        if who.is_empty() {
            return Ok(None);
        }
        self.store.get_account(who).await
    }
}
