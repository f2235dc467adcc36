//! Submitting, reading and cancelling jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use station_store::{AccountRow, JobRow, JobStatus, NewJob};
use station_tools::{FieldError, InputType, ToolDef, Visibility, resolve_params};

use crate::Station;
use crate::events::JobEvent;

/// A request to run a tool.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// Tool id or chat command.
    pub tool: String,
    /// Explicit parameters (highest precedence).
    pub params: Map<String, Value>,
    /// Scheduling priority (0 normal; only admins may raise it).
    pub priority: i64,
    /// Where the request came from, for delivery.
    pub source: Option<Value>,
    /// The user has seen the price and agreed: jobs priced above the
    /// account's quote threshold are refused with
    /// [`SubmitError::ConfirmationRequired`] unless this is set.
    pub confirmed: bool,
    /// The group the request was made in (`telegram:-100123`,
    /// `discord-guild:987`); its sponsor, if any, pays within the per-member cap.
    pub sponsor_scope: Option<String>,
    /// Names this submission: a second submit with the same key (an input
    /// processed again after a crash) queues and charges nothing and returns
    /// the job the first one queued. Keys are global; one used by another
    /// account is refused as an invalid `idempotency_key`.
    pub idempotency_key: Option<String>,
}

/// Why a submission was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No such tool, or not visible to the caller.
    #[error("unknown tool {0:?}; `station tools list` shows the available ones")]
    UnknownTool(String),
    /// Parameters failed validation; every bad field is listed.
    #[error("invalid parameters: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The account may not run jobs.
    #[error("account is suspended")]
    Suspended,
    /// The account cannot afford the job's price.
    #[error("not enough points: this costs {needed}, you have {available} available")]
    InsufficientPoints {
        /// The job's price (points to hold).
        needed: i64,
        /// Points the account had available.
        available: i64,
    },
    /// The job costs more than the account's quote threshold and the
    /// request was not confirmed; show the quote ([`Station::quote`]) and
    /// submit again with `confirmed`.
    #[error(
        "this job costs {price} points, more than your confirmation threshold of {threshold}; \
         confirm to queue it, or raise your threshold"
    )]
    ConfirmationRequired {
        /// The job's price.
        price: i64,
        /// The threshold it exceeds.
        threshold: i64,
    },
    /// The account is at one of its limits.
    #[error("you have {limit} {what}, the most allowed; wait for one to finish, then try again")]
    QuotaExceeded {
        /// The limit reached.
        limit: u64,
        /// What is limited, e.g. `jobs queued`.
        what: &'static str,
        /// A rough wait before a retry can succeed, when known.
        retry_after_secs: Option<u64>,
    },
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// A submission checked and priced, not yet written.
pub(crate) struct Prepared {
    pub(crate) tool: Arc<ToolDef>,
    pub(crate) job: NewJob,
    pub(crate) price: i64,
}

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
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tool_id).filter(|(at, _)| at.elapsed() < ETA_CACHE_TTL).map(|(_, avg)| *avg)
    }

    fn put(&self, tool_id: &str, avg: Option<f64>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Tools are few; stale entries of removed tools are dropped when the map grows.
        if map.len() > 1_024 {
            map.retain(|_, (at, _)| at.elapsed() < ETA_CACHE_TTL);
        }
        map.insert(tool_id.to_string(), (Instant::now(), avg));
    }
}

impl Station {
    /// Finds a tool by id or command, as visible to `account`.
    pub fn find_tool(&self, name: &str, account: &AccountRow) -> Option<Arc<ToolDef>> {
        let name = name.trim_start_matches('/');
        let tool = match self.config.commands.get(name) {
            Some(id) => self.tools.get(id)?,
            None => self.tools.get(name).or_else(|| self.tools.by_command(name))?,
        };
        match tool.visibility {
            Visibility::Admin if account.role != "admin" => None,
            _ => Some(tool),
        }
    }

    /// Validates and enqueues a job. Parameters merge explicit > the account's
    /// saved settings for the tool > tool defaults; image inputs must be media
    /// the account owns. The job row is written before anything is sent.
    /// Refused when the price is above the account's quote threshold and the
    /// request is not `confirmed`, when the account has `limits.max_queued`
    /// jobs queued (administrators excepted), or when it cannot pay.
    pub async fn submit(&self, account: &AccountRow, req: SubmitRequest) -> Result<JobRow, SubmitError> {
        self.submit_at(account, req, station_store::now_ms()).await
    }

    /// [`Station::submit`] at a given time (Unix ms), which picks the UTC day
    /// whose free allowance and sponsorship caps the job counts against.
    pub async fn submit_at(&self, account: &AccountRow, req: SubmitRequest, now: i64) -> Result<JobRow, SubmitError> {
        let key = req.idempotency_key.as_deref().filter(|k| !k.is_empty());
        if let Some(key) = key {
            // Answered before validating: a repeat must not be refused for a
            // price or a quota that changed since the first one was queued.
            let earlier = self.store.job_by_idem_key(key).await.map_err(|e| SubmitError::Storage(e.to_string()))?;
            if let Some(job) = earlier {
                return self.keyed_repeat(account, job);
            }
        }
        let p = self.prepare(account, &req).await?;
        if !req.confirmed
            && let Some(threshold) =
                self.quote_threshold(account).await.map_err(|e| SubmitError::Storage(e.to_string()))?
            && p.price > threshold
        {
            return Err(SubmitError::ConfirmationRequired { price: p.price, threshold });
        }
        // The price is paid in the same transaction that queues the job, so a
        // refused payment queues nothing and an accepted job is always paid for.
        let terms = self.pay_terms(account, p.price, req.sponsor_scope.as_deref());
        let actor = format!("account:{}", account.id);
        let placed = match self.ensure_starting_grant(&account.id).await {
            Ok(()) => self.store.insert_job_paid_keyed(&p.job, &terms, &actor, key, now).await,
            Err(e) => Err(e),
        };
        let row = match placed {
            Ok(station_store::Placed::New(row, _)) => row,
            // A concurrent submit with the same key won.
            Ok(station_store::Placed::Existing(job)) => return self.keyed_repeat(account, job),
            Err(station_store::LedgerError::Insufficient { needed, available }) => {
                return Err(SubmitError::InsufficientPoints { needed, available });
            }
            Err(station_store::LedgerError::QuotaExceeded { limit, .. }) => {
                // A queued slot frees when one of the account's jobs starts,
                // roughly one run of this tool from now.
                let avg = self.store.recent_run_ms(&p.tool.id, 20).await.ok().flatten();
                let retry_after_secs = avg.map(|ms| ((ms / 1000.0).ceil() as u64).max(1));
                return Err(SubmitError::QuotaExceeded { limit: limit as u64, what: "jobs queued", retry_after_secs });
            }
            Err(e) => return Err(SubmitError::Storage(e.to_string())),
        };
        self.bus.publish(JobEvent::Status { job_id: row.id.clone(), status: JobStatus::Queued, error: None });
        self.wake.notify_waiters();
        Ok(row)
    }

    /// Every refusal [`Station::submit`] would give `req` now — parameters
    /// and images, the confirmation threshold, the queued-jobs quota, the
    /// payment — found without writing a job or a hold (only a starting
    /// grant that is due, as [`Station::quote`] does). `pending` lists
    /// `media:` references standing for images not stored yet (uploads in the
    /// same request): they count as the account's own. A front end that
    /// stores uploads only after this passes leaves nothing behind for a
    /// refused request; `submit` still decides (a concurrent job can take
    /// the last points or queue slot in between).
    pub async fn check_submit(
        &self,
        account: &AccountRow,
        req: &SubmitRequest,
        pending: &[String],
    ) -> Result<(), SubmitError> {
        let storage = |e: &dyn std::fmt::Display| SubmitError::Storage(e.to_string());
        let p = self.prepare_with(account, req, pending).await?;
        if !req.confirmed
            && let Some(threshold) = self.quote_threshold(account).await.map_err(|e| storage(&e))?
            && p.price > threshold
        {
            return Err(SubmitError::ConfirmationRequired { price: p.price, threshold });
        }
        self.ensure_starting_grant(&account.id).await.map_err(|e| storage(&e))?;
        let terms = self.pay_terms(account, p.price, req.sponsor_scope.as_deref());
        let plan =
            self.store.plan_payment(&account.id, &terms, station_store::now_ms()).await.map_err(|e| storage(&e))?;
        if let Some(limit) = terms.max_queued
            && plan.queued >= limit
        {
            return Err(SubmitError::QuotaExceeded {
                limit: limit as u64,
                what: "jobs queued",
                retry_after_secs: None,
            });
        }
        if !plan.affordable {
            return Err(SubmitError::InsufficientPoints { needed: p.price, available: plan.available });
        }
        Ok(())
    }

    /// The answer to a submit whose idempotency key queued `job` before.
    fn keyed_repeat(&self, account: &AccountRow, job: JobRow) -> Result<JobRow, SubmitError> {
        if job.account_id != account.id {
            return Err(SubmitError::Invalid(vec![FieldError {
                field: "idempotency_key".into(),
                reason: "already used for another account's job".into(),
            }]));
        }
        Ok(job)
    }

    /// Validates a request and prices it without writing anything: the
    /// checks and parameter resolution of [`Station::submit`].
    pub(crate) async fn prepare(&self, account: &AccountRow, req: &SubmitRequest) -> Result<Prepared, SubmitError> {
        self.prepare_with(account, req, &[]).await
    }

    /// [`Station::prepare`] taking the image references in `pending` as the
    /// account's own without looking them up (see [`Station::check_submit`]).
    async fn prepare_with(
        &self,
        account: &AccountRow,
        req: &SubmitRequest,
        pending: &[String],
    ) -> Result<Prepared, SubmitError> {
        if account.suspended {
            return Err(SubmitError::Suspended);
        }
        let tool = self.find_tool(&req.tool, account).ok_or_else(|| SubmitError::UnknownTool(req.tool.clone()))?;
        let saved =
            self.store.tool_settings(&account.id, &tool.id).await.map_err(|e| SubmitError::Storage(e.to_string()))?;
        let resolved = resolve_params(&tool, &req.params, &saved, &mut rand::rng());
        // Image references are checked even when other parameters failed, so
        // one answer names every bad field (an unknown image among them).
        let mut errors = resolved.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
        for (name, input) in &tool.inputs {
            if input.kind != InputType::Image || errors.iter().any(|e| &e.field == name) {
                continue;
            }
            let value = match &resolved {
                Ok(r) => r.values.get(name),
                // Whichever value resolution would have used for this input.
                Err(_) => req.params.get(name).filter(|v| !v.is_null()).or_else(|| saved.get(name)),
            };
            let Some(Value::String(r)) = value else { continue };
            let Some(id) = r.strip_prefix("media:") else { continue };
            if pending.iter().any(|p| p == r) {
                continue;
            }
            match self.store.get_media(id).await.map_err(|e| SubmitError::Storage(e.to_string()))? {
                Some(m) if m.account_id.as_deref() == Some(account.id.as_str()) || account.role == "admin" => {}
                // Someone else's image is answered exactly like a missing one.
                _ => errors.push(FieldError {
                    field: name.clone(),
                    reason: format!("image {r} not found among your uploads"),
                }),
            }
        }
        let resolved = match resolved {
            Ok(r) if errors.is_empty() => r,
            _ => {
                // Report in the tool's input order, unknown names last.
                errors.sort_by_key(|e| tool.inputs.keys().position(|k| k == &e.field).unwrap_or(usize::MAX));
                return Err(SubmitError::Invalid(errors));
            }
        };
        let mut values = resolved.values;
        // Resolved now, not when the job runs, so retries apply the same LoRAs
        // and the job's params show what was applied.
        self.loras()
            .apply_to_params(&tool, account, &mut values)
            .await
            .map_err(|e| SubmitError::Storage(format!("LoRA catalog: {e}")))?;
        let priority = if account.role == "admin" { req.priority } else { req.priority.min(0) };
        let q = &self.config.queue;
        let job = NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account.id.clone(),
            tool_id: tool.id.clone(),
            service: service_name(tool.service).to_string(),
            params: values,
            priority,
            max_attempts: q.max_attempts as i64,
            timeout_ms: (q.job_timeout_seconds * 1000) as i64,
            source: req.source.clone(),
        };
        let price = crate::points::price(&tool.cost, self.config.points.multiplier);
        Ok(Prepared { tool, job, price })
    }

    /// A job with its queue position and ETA.
    pub async fn job_view(&self, job_id: &str) -> Result<Option<JobView>, station_store::StoreError> {
        Ok(self.job_status(job_id).await?.map(|s| s.view))
    }

    /// [`Station::job_view`] with the owner's mark (rating, hidden): one
    /// query for the row, the mark and a queued job's position; the ETA's
    /// recent run times come from [`EtaCache`] and are read only for queued
    /// or running jobs.
    pub async fn job_status(&self, job_id: &str) -> Result<Option<JobStatusView>, station_store::StoreError> {
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
    async fn recent_run_ms(&self, tool_id: &str) -> Result<Option<f64>, station_store::StoreError> {
        if let Some(avg) = self.eta_cache.get(tool_id) {
            return Ok(avg);
        }
        let avg = self.store.recent_run_ms(tool_id, 20).await?;
        self.eta_cache.put(tool_id, avg);
        Ok(avg)
    }

    /// Cancels a job the account owns (admins: any job).
    pub async fn cancel(
        &self,
        account: &AccountRow,
        job_id: &str,
    ) -> Result<Option<JobRow>, station_store::StoreError> {
        match self.store.get_job(job_id).await? {
            Some(j) if j.account_id == account.id || account.role == "admin" => {}
            _ => return Ok(None),
        }
        let row = self.store.cancel_job(job_id, station_store::now_ms()).await?;
        if row.status() == JobStatus::Cancelled {
            // A queued job never reaches a worker, so its hold is returned here
            // (a failure is left to the sweeper, which settles stuck holds).
            if let Err(e) = self.settle_job(&row.id, &format!("account:{}", account.id)).await {
                tracing::warn!(job = %row.id, error = %e, "could not release the cancelled job's points yet");
            }
            self.bus.publish(JobEvent::Status { job_id: row.id.clone(), status: JobStatus::Cancelled, error: None });
        }
        Ok(Some(row))
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

/// The stored name of a tool's service.
pub fn service_name(s: station_tools::Service) -> &'static str {
    match s {
        station_tools::Service::Comfyui => "comfyui",
        station_tools::Service::Media => "media",
    }
}
