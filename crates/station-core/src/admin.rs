//! Operator views: the queue and the backends at a glance, and finding an
//! account from what an operator types. Shared by every admin surface (the
//! chat `/queue` and `/grant` commands; the REST admin endpoints compute the
//! same from the same store calls).

use std::collections::BTreeMap;

use station_store::{AccountRow, BackendRow, JobFilter, JobRow, JobStatus, StoreError};

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

    /// One account by id (a linked-away id gives the account it was joined into).
    pub async fn account_by_id(&self, id: &str) -> Result<Option<AccountRow>, StoreError> {
        self.store.get_account(id).await
    }

    /// Accounts ordered by id (not those linked into another), after `after_id`.
    pub async fn accounts_page(&self, after_id: Option<&str>, limit: i64) -> Result<Vec<AccountRow>, StoreError> {
        self.store.list_accounts_page(after_id, limit).await
    }

    /// Accounts, oldest first (not those linked into another), at most `limit`.
    pub async fn accounts(&self, limit: i64) -> Result<Vec<AccountRow>, StoreError> {
        self.store.list_accounts(limit).await
    }

    /// The `(provider, subject)` platform identities that lead to an account.
    pub async fn account_identities(&self, account_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.store.account_identities(account_id).await
    }

    /// Administrators with an identity on `provider` (e.g. `telegram`), as
    /// `(account, subject)` by subject: chat adapters give them operator menus.
    pub async fn admins_on(&self, provider: &str) -> Result<Vec<(AccountRow, String)>, StoreError> {
        self.store.role_identities(station_store::Role::Admin, provider).await
    }

    /// The most recently failed jobs, newest first.
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        self.store.recent_failures(limit).await
    }

    /// A fingerprint of the database this Station uses (see
    /// [`crate::Config::database_fingerprint`]).
    pub fn database_fingerprint(&self) -> String {
        self.config.database_fingerprint()
    }

    /// Whether the database answers within `timeout`: `Ok` or why not, in words.
    pub async fn database_health(&self, timeout: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {} s", timeout.as_secs_f64())),
        }
    }

    /// The account an operator means: `provider:subject` (a platform identity
    /// such as `telegram:123`), an account id (a linked-away id gives the
    /// account it was joined into), or a bare local user name (`local:NAME`).
    /// Never creates an account.
    pub async fn find_account(&self, who: &str) -> Result<Option<AccountRow>, StoreError> {
        let who = who.trim();
        if let Some((provider, subject)) = who.split_once(':') {
            if provider.is_empty() || subject.is_empty() {
                return Ok(None);
            }
            return self.store.find_account_by_identity(provider, subject).await;
        }
        if who.is_empty() {
            return Ok(None);
        }
        match self.store.get_account(who).await? {
            Some(a) => Ok(Some(a)),
            None => self.store.find_account_by_identity("local", who).await,
        }
    }

    /// Jobs of every account, newest first, filtered (operator views: `station jobs list`).
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        self.store.list_jobs(filter).await
    }

    /// Every migration known to this build: `(version, description, applied)`.
    pub async fn migration_status(&self) -> Result<Vec<(i64, String, bool)>, StoreError> {
        self.store.migration_status().await
    }

    /// ComfyUI backends added at run time (`station backends add`).
    pub async fn runtime_backends(&self) -> Result<Vec<BackendRow>, StoreError> {
        self.store.list_backends().await
    }

    /// Adds or replaces a run-time backend; every process picks it up.
    /// Audited (`backend.add`).
    pub async fn save_runtime_backend(&self, backend: &BackendRow, by: &crate::audit::Actor) -> Result<(), StoreError> {
        self.store.upsert_backend(backend).await?;
        let detail = format!(
            "{} at {}, {} at once",
            backend.name,
            station_store::mask_url(&backend.url),
            backend.max_concurrent
        );
        self.audit(by, "backend.add", &backend.name, detail).await;
        Ok(())
    }

    /// Removes a run-time backend; true if it existed. Audited
    /// (`backend.remove`) when it did.
    pub async fn remove_runtime_backend(&self, name: &str, by: &crate::audit::Actor) -> Result<bool, StoreError> {
        let removed = self.store.remove_backend(name).await?;
        if removed {
            self.audit(by, "backend.remove", name, format!("{name} removed")).await;
        }
        Ok(removed)
    }
}
