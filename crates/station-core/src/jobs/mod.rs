//! Jobs: submitting (validated, priced and paid in one transaction),
//! cancelling, reading them back, and the owner's actions on them.
//!
//! - [`request`]: what a front end asks ([`SubmitRequest`]) and every refusal ([`SubmitError`]);
//! - [`view`]: a job as people waiting for it see it (queue position, ETA);
//! - [`owned`]: lookups that check ownership, marks, history pages, reruns;
//! - [`quote`]: what a request would cost, before it is submitted;
//! - [`download`]: a selection of one's generations as one streamed ZIP;
//! - this module: finding tools, submitting and cancelling.

pub mod download;
pub mod ids;
pub mod owned;
pub mod quote;
pub mod request;
pub mod view;

use serde_json::Value;
use station_store::{AccountRow, JobRow, JobStatus, LedgerError, NewJob, PayTerms, Payment};
use station_tools::{FieldError, InputType, ToolDef, Visibility, resolve_params_with_defaults};

use crate::Station;
use crate::events::JobEvent;
use crate::media::CheckedImage;
pub use download::{DownloadError, GenerationsZip, MAX_DOWNLOAD_GENERATIONS};
pub use ids::{JobIdError, PREFIX_MIN, SHORT_ID_MIN};
pub use owned::{GenerationPage, JobAccessError, RatingError};
pub use quote::Quote;
pub(crate) use request::Prepared;
pub use request::{SubmitError, SubmitRequest};
pub use view::{ETA_CACHE_TTL, EtaCache, JobStatusView, JobView, status_text};

/// A submission validated and priced, with the payer's position, before
/// anything is written: what both a quote and a pre-flight check read.
pub(crate) struct Assessment<'a> {
    /// The checked request.
    pub(crate) prepared: Prepared,
    /// Who pays and what the job may take.
    pub(crate) terms: PayTerms<'a>,
    /// What the payer can cover now.
    pub(crate) plan: Payment,
    /// The account's quote threshold in effect.
    pub(crate) threshold: Option<i64>,
}

impl Station {
    /// Finds a tool by id or command, as visible to `account`: tools with
    /// visibility `admin` or `hidden` (templates) do not exist for anyone but
    /// administrators (nor do tools with a `model` input while no backend that
    /// is up offers a model for them), so quoting, submitting, rerunning and saving settings
    /// all answer "unknown tool", on every front end (they all look tools up here).
    /// A tool whose feature flag (`tool.<id>`) is off for the account is
    /// unknown to it too, administrators included.
    pub fn find_tool(&self, name: &str, account: &AccountRow) -> Option<std::sync::Arc<ToolDef>> {
        let name = name.trim_start_matches('/');
        let tool = match self.config.commands.get(name) {
            Some(id) => self.tools.get(id)?,
            None => self.tools.get(name).or_else(|| self.tools.by_command(name))?,
        };
        match tool.visibility {
            Visibility::Admin | Visibility::Hidden if !account.is_admin() => None,
            // A tool with a model input is hidden while no backend offers a model for it.
            Visibility::Public if !account.is_admin() && !self.tool_offered(&tool) => None,
            // Switched off for this account by its feature flag (`tool.<id>`).
            _ if !self.tool_flag_on(&tool.id, account) => None,
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
            if let Some(job) = self.store.job_by_idem_key(key).await? {
                return keyed_repeat(account, job);
            }
        }
        // A flag flipped in another process applies within the cache bound.
        self.refresh_flags_if_stale().await;
        let callback = self.check_callback_url(req.callback_url.as_deref()).await?;
        let p = self.prepare(account, &req).await?;
        if !req.confirmed
            && let Some(threshold) = self.quote_threshold(account).await?
            && p.price > threshold
        {
            return Err(SubmitError::ConfirmationRequired { price: p.price, threshold });
        }
        // The price is paid in the same transaction that queues the job, so a
        // refused payment queues nothing and an accepted job is always paid for.
        let terms = self.pay_terms(account, p.price, req.sponsor_scope.as_deref());
        let actor = format!("account:{}", account.id);
        self.ensure_starting_grant(&account.id).await?;
        if let Some(url) = &callback {
            // Before the job: once it exists, its end is owed to the URL.
            self.callback_secret(account).await?;
            self.store.insert_callback("generation", &p.job.id, &account.id, url, now).await?;
        }
        let row = match self.store.insert_job_paid_keyed(&p.job, &terms, &actor, key, now).await {
            Ok(station_store::Placed::New(row, paid_by)) => {
                crate::telemetry::job_submitted(&row.tool_id, &row.service);
                if !matches!(paid_by, station_store::PaidBy::Free) {
                    crate::telemetry::points("held", p.price);
                }
                row
            }
            // A concurrent submit with the same key won.
            Ok(station_store::Placed::Existing(job)) => return keyed_repeat(account, job),
            Err(LedgerError::Insufficient { needed, available }) => {
                return Err(SubmitError::InsufficientPoints { needed, available });
            }
            Err(LedgerError::QuotaExceeded { limit, .. }) => {
                // A queued slot frees when one of the account's jobs starts,
                // roughly one run of this tool from now.
                let avg = self.store.recent_run_ms(&p.tool.id, 20).await.ok().flatten();
                let retry_after_secs = avg.map(|ms| ((ms / 1000.0).ceil() as u64).max(1));
                return Err(SubmitError::QuotaExceeded { limit: limit as u64, what: "jobs queued", retry_after_secs });
            }
            Err(e) => return Err(e.into()),
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
    /// same request): they count as the account's own. `submit` still
    /// decides (a concurrent job can take the last points or queue slot in
    /// between); [`Station::submit_with_uploads`] uses this before storing.
    pub async fn check_submit(
        &self,
        account: &AccountRow,
        req: &SubmitRequest,
        pending: &[String],
    ) -> Result<(), SubmitError> {
        self.check_callback_url(req.callback_url.as_deref()).await?;
        let a = self.assess(account, req, pending, station_store::now_ms()).await?;
        let price = a.prepared.price;
        if !req.confirmed
            && let Some(threshold) = a.threshold
            && price > threshold
        {
            return Err(SubmitError::ConfirmationRequired { price, threshold });
        }
        quota_check(&a)?;
        if !a.plan.affordable {
            return Err(SubmitError::InsufficientPoints { needed: price, available: a.plan.available });
        }
        Ok(())
    }

    /// Validates and prices `req` and reads what the payer can cover, writing
    /// nothing but the account's starting grant if it is still due (so a new
    /// account's first answer shows the points its first job will have).
    pub(crate) async fn assess<'r>(
        &self,
        account: &AccountRow,
        req: &'r SubmitRequest,
        pending: &[String],
        now: i64,
    ) -> Result<Assessment<'r>, SubmitError> {
        let prepared = self.prepare_with(account, req, pending).await?;
        self.ensure_starting_grant(&account.id).await?;
        let terms = self.pay_terms(account, prepared.price, req.sponsor_scope.as_deref());
        let plan = self.store.plan_payment(&account.id, &terms, now).await?;
        let threshold = self.quote_threshold(account).await?;
        Ok(Assessment { prepared, terms, plan, threshold })
    }

    /// [`Station::check_submit`] for a request whose image inputs named in
    /// `upload_inputs` will be filled by images uploaded with it (not stored
    /// yet): they count as the account's own images.
    pub async fn check_submit_with_uploads(
        &self,
        account: &AccountRow,
        req: &SubmitRequest,
        upload_inputs: &[String],
    ) -> Result<(), SubmitError> {
        let mut req = req.clone();
        let pending = with_placeholders(&mut req, upload_inputs);
        self.check_submit(account, &req, &pending).await
    }

    /// Submits `req` with images uploaded in the same request: `uploads` are
    /// `(input name, checked image)` pairs. The whole submission is checked
    /// first ([`Station::check_submit_with_uploads`]), so a refused request
    /// stores nothing; then the uploads are stored and the job submitted. If
    /// the submit is refused after all (another request took the last points
    /// or queue slot), or a concurrent request with the same idempotency key
    /// won, the stored uploads are deleted again.
    pub async fn submit_with_uploads(
        &self,
        account: &AccountRow,
        mut req: SubmitRequest,
        uploads: Vec<(String, CheckedImage)>,
    ) -> Result<JobRow, SubmitError> {
        let names: Vec<String> = uploads.iter().map(|(n, _)| n.clone()).collect();
        self.check_submit_with_uploads(account, &req, &names).await?;
        let mut stored: Vec<String> = vec![];
        let mut outcome = Ok(());
        for (name, image) in uploads {
            match self.media.put_checked(image, Some(&account.id), None, "input").await {
                Ok(row) => {
                    req.params.insert(name, Value::String(format!("media:{}", row.id)));
                    stored.push(row.id);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let answer = match outcome {
            Ok(()) => self.submit(account, req).await,
            Err(e) => Err(SubmitError::Upload(e)),
        };
        // Refused, or answered with the generation a concurrent request with
        // the same key queued (which does not use these uploads): they go.
        let unused = match &answer {
            Ok(row) => !stored.iter().all(|id| row.params.contains(id.as_str())),
            Err(_) => true,
        };
        if unused {
            for id in &stored {
                if let Err(e) = self.store.delete_media(id).await {
                    tracing::warn!(media = %id, error = %e, "could not delete an upload of a refused request");
                }
            }
        }
        answer
    }

    /// Validates a request and prices it without writing anything: the
    /// checks and parameter resolution of [`Station::submit`].
    pub(crate) async fn prepare(&self, account: &AccountRow, req: &SubmitRequest) -> Result<Prepared, SubmitError> {
        self.prepare_with(account, req, &[]).await
    }

    /// [`Station::prepare`] taking the image references in `pending` as the
    /// account's own without looking them up (see [`Station::check_submit`]).
    pub(crate) async fn prepare_with(
        &self,
        account: &AccountRow,
        req: &SubmitRequest,
        pending: &[String],
    ) -> Result<Prepared, SubmitError> {
        if account.suspended {
            return Err(SubmitError::Suspended);
        }
        let tool = self.find_tool(&req.tool, account).ok_or_else(|| SubmitError::UnknownTool(req.tool.clone()))?;
        self.prepare_tool(account, tool, req, pending).await
    }

    /// [`Station::prepare_with`] for a tool the core chose itself (a hidden
    /// caption tool): validated and priced like any, not looked up by name.
    pub(crate) async fn prepare_tool(
        &self,
        account: &AccountRow,
        tool: std::sync::Arc<ToolDef>,
        req: &SubmitRequest,
        pending: &[String],
    ) -> Result<Prepared, SubmitError> {
        if account.suspended {
            return Err(SubmitError::Suspended);
        }
        let saved = self.store.tool_settings(&account.id, &tool.id).await?;
        // The model first: its base model picks the defaults of the rest.
        let (model, model_error) = match self.choose_model(&tool, &req.params, &saved).await {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e)),
        };
        let mut explicit = std::borrow::Cow::Borrowed(&req.params);
        let mut base_defaults = serde_json::Map::new();
        if let Some((input, m)) = &model {
            explicit.to_mut().insert(input.clone(), Value::String(m.name.clone()));
            if let Some(d) = m.base_model.as_ref().and_then(|b| tool.base_model_defaults.get(b)) {
                base_defaults = d.clone();
            }
        }
        let resolved = resolve_params_with_defaults(&tool, &explicit, &saved, &base_defaults, &mut rand::rng());
        // Image references are checked even when other parameters failed, so
        // one answer names every bad field (an unknown image among them).
        let mut errors = resolved.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
        if let Some(e) = model_error {
            errors.retain(|x| x.field != e.field);
            errors.push(e);
        }
        // The size of the first stored input image, for checks that need it.
        let mut image_size: Option<(u32, u32)> = None;
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
            match self.store.get_media(id).await? {
                Some(m) if account.may_access(m.account_id.as_deref()) => {
                    if image_size.is_none() {
                        image_size = Some((
                            u32::try_from(m.width).unwrap_or(u32::MAX),
                            u32::try_from(m.height).unwrap_or(u32::MAX),
                        ));
                    }
                    if !input.animated
                        && let Some(frames) = self.media.stored_frames(&m).await
                        && frames > 1
                    {
                        errors.push(FieldError {
                            field: name.clone(),
                            reason: format!(
                                "image {r} is an animation of {frames} frames; this input takes a still image"
                            ),
                        });
                    }
                }
                // Someone else's image is answered exactly like a missing one.
                _ => errors.push(FieldError {
                    field: name.clone(),
                    reason: format!("image {r} not found among your uploads"),
                }),
            }
        }
        // Rules of the native operation itself (a logo that is not
        // configured, a colour, a resize beyond the pixel limit): refused
        // now rather than failing after queuing.
        if let Ok(r) = &resolved {
            for (field, reason) in crate::native::check(&tool, &r.values, &self.config, image_size) {
                if !errors.iter().any(|e| e.field == field) {
                    errors.push(FieldError { field, reason });
                }
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
        // With a model input, LoRAs follow the chosen model's base model.
        let base_model = match &model {
            Some((_, m)) => m.base_model.clone(),
            None => tool.base_model.clone(),
        };
        self.loras().apply_to_params(&tool, account, base_model.as_deref(), &mut values).await?;
        let mut multiplier = self.config.points.multiplier;
        if let Some((_, m)) = &model
            && m.price_multiplier != 1.0
        {
            multiplier *= m.price_multiplier;
            values.insert(crate::models::MULTIPLIER_PARAM.into(), Value::from(m.price_multiplier));
        }
        let priority = if account.is_admin() { req.priority } else { req.priority.min(0) };
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
        let price = crate::points::price(&tool.cost, multiplier);
        Ok(Prepared { tool, job, price })
    }

    /// Cancels a job the account owns (admins: any job): a queued one at
    /// once (its points returned), a running one as soon as its backend stops.
    /// `Ok(None)` when the job does not exist or is someone else's.
    pub async fn cancel(
        &self,
        account: &AccountRow,
        job_id: &str,
    ) -> Result<Option<JobRow>, station_store::StoreError> {
        match self.store.get_job(job_id).await? {
            Some(j) if account.may_access(Some(&j.account_id)) => {}
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
}

/// Puts a placeholder reference for each of `inputs` into `req`'s params
/// and returns them: references no stored media can have (media ids are
/// plain hex), standing for uploads until they are stored.
fn with_placeholders(req: &mut SubmitRequest, inputs: &[String]) -> Vec<String> {
    let mut pending = vec![];
    for name in inputs {
        let placeholder = format!("media:upload-{:016x}", rand::random::<u64>());
        req.params.insert(name.clone(), Value::String(placeholder.clone()));
        pending.push(placeholder);
    }
    pending
}

/// The queued-jobs quota refusal of an assessment, if the account is at it.
pub(crate) fn quota_check(a: &Assessment<'_>) -> Result<(), SubmitError> {
    match a.terms.max_queued {
        Some(limit) if a.plan.queued >= limit => {
            Err(SubmitError::QuotaExceeded { limit: limit as u64, what: "jobs queued", retry_after_secs: None })
        }
        _ => Ok(()),
    }
}

/// The answer to a submit whose idempotency key queued `job` before.
fn keyed_repeat(account: &AccountRow, job: JobRow) -> Result<JobRow, SubmitError> {
    if job.account_id != account.id {
        return Err(SubmitError::Invalid(vec![FieldError {
            field: "idempotency_key".into(),
            reason: "already used for another account's job".into(),
        }]));
    }
    Ok(job)
}

/// The stored name of a tool's service.
pub fn service_name(s: station_tools::Service) -> &'static str {
    match s {
        station_tools::Service::Comfyui => "comfyui",
        station_tools::Service::Media => "media",
        station_tools::Service::Comfydeploy => "comfydeploy",
    }
}
