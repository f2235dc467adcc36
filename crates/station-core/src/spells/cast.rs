//! Casting a spell: one durable cast with a job per step.
//!
//! [`Station::cast`] validates every step as a submission would (the later
//! steps' mapped images standing in as pending uploads), prices them, and
//! writes the cast, every step's job and every hold in one transaction
//! (`Store::insert_cast`): the whole price is held at cast time, so a cast
//! never stops halfway for lack of points, and each step's hold is settled
//! (captured or released) by the ordinary job machinery when that step ends.
//! Steps after the first wait *parked* (queued, not claimable).
//!
//! [`Station::advance_cast`] moves a cast on from its durable state alone:
//! when the current step succeeded, the next step's mapped inputs are bound
//! to the outputs and it is unparked, in one conditional transaction that
//! also moves the cast's step — so a crash between steps neither loses nor
//! repeats one, and two processes advancing at once advance once. A failed
//! or cancelled step fails (or cancels) the cast: the remaining steps are
//! cancelled and their holds released. The workers' cast loop calls it when
//! a step's job ends and sweeps for casts it missed.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use station_store::{AccountRow, CastRow, JobRow, JobStatus, NewCast, StoreError};
use station_tools::{FieldError, coerce_value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Source, SpellError};
use crate::Station;
use crate::events::JobEvent;
use crate::jobs::{SubmitError, SubmitRequest};

/// A request to cast a spell.
#[derive(Debug, Clone, Default)]
pub struct CastRequest {
    /// Spell slug or id.
    pub spell: String,
    /// Values of the spell's exposed inputs (typed text is coerced).
    pub inputs: Map<String, Value>,
    /// The caster has seen the total price and agreed (see [`SubmitRequest::confirmed`]).
    pub confirmed: bool,
    /// Where it was asked from (a chat conversation), stored on every step's
    /// job: the conversation follows the cast with one progress message.
    pub source: Option<Value>,
    /// A cast repeated with the same key (a chat input handled again after
    /// a crash, an HTTP retry) returns the first one: one cast, one charge.
    pub idempotency_key: Option<String>,
    /// An http(s) URL sent the cast's end (`cast.succeeded`, …) as a signed
    /// webhook event, as a generation's `callback_url`.
    pub callback_url: Option<String>,
}

/// Why a cast was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    /// No such spell, or not visible to the caster.
    #[error("unknown spell {0:?}; `station spells list` shows the ones you can cast")]
    UnknownSpell(String),
    /// The spell no longer checks against the tools.
    #[error("spell {slug} is broken: {reason}")]
    Broken {
        /// The spell.
        slug: String,
        /// Why.
        reason: String,
    },
    /// Refused like a submission: bad inputs (fields `inputs.NAME` or
    /// `stepN.PARAM`), the confirmation threshold, quota, points, storage.
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

impl From<StoreError> for CastError {
    fn from(e: StoreError) -> CastError {
        CastError::Submit(SubmitError::Storage(e))
    }
}

impl From<SpellError> for CastError {
    fn from(e: SpellError) -> CastError {
        match e {
            SpellError::Invalid(errs) => CastError::Submit(SubmitError::Invalid(errs)),
            SpellError::Storage(e) => e.into(),
        }
    }
}

/// One step of a cast as front ends show it.
#[derive(Debug, Clone, Serialize)]
pub struct CastStepView {
    /// 1-based position.
    pub step: usize,
    /// The tool's id.
    pub tool_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// Its job (a generation of the caster's).
    pub job_id: String,
    /// The job's status; a step waiting for the one before it is `waiting`.
    pub status: String,
    /// 0..1.
    pub progress: f64,
    /// Output media ids, once it succeeded.
    pub outputs: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A cast as front ends show it.
#[derive(Debug, Clone, Serialize)]
pub struct CastView {
    /// Id.
    pub id: String,
    /// The spell's slug.
    pub spell: String,
    /// The spell's name.
    pub spell_name: String,
    /// The caster's account.
    pub account_id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The step running or last run, 1-based.
    pub step: usize,
    /// Number of steps.
    pub steps_total: usize,
    /// Points held for the whole cast (the sum of the steps' prices).
    pub price: i64,
    /// Where it stands, for people: "step 2 of 3: Upscale 40 %".
    pub progress_text: String,
    /// The whole cast's progress, 0..1 (each step an equal share).
    pub progress: f64,
    /// The last step's outputs, once it succeeded.
    pub outputs: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The caster's inputs (to cast it again with the same values).
    pub inputs: Map<String, Value>,
    /// Each step.
    pub steps: Vec<CastStepView>,
    /// When cast (Unix ms).
    pub created_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
}

/// "step 2 of 3: Upscale 40 %": where a cast stands, for people.
pub fn progress_text(status: &str, step: usize, total: usize, tool_name: &str, job: Option<&JobRow>) -> String {
    match status {
        "succeeded" => format!("done: {total} of {total} steps"),
        "cancelled" => format!("cancelled at step {step} of {total}: {tool_name}"),
        "failed" => format!("failed at step {step} of {total}: {tool_name}"),
        _ => {
            let what = match job.map(JobRow::status) {
                Some(JobStatus::Running) => {
                    let pct = job.map(|j| (j.progress * 100.0).clamp(0.0, 100.0).floor()).unwrap_or(0.0);
                    format!("{pct:.0} %")
                }
                Some(JobStatus::Dispatched) => "waiting for a GPU".into(),
                Some(JobStatus::Succeeded) => "done".into(),
                _ => "queued".into(),
            };
            format!("step {step} of {total}: {tool_name} {what}")
        }
    }
}

/// A placeholder image reference standing for a step's output while the
/// later steps are validated (it can never name stored media).
fn placeholder(step: usize, index: usize) -> String {
    format!("media:cast-step{}-output{index}-{:08x}", step + 1, rand::random::<u32>())
}

impl Station {
    /// Casts a spell as `account`: every step validated and priced, the sum
    /// held, the first step queued. Runs under the caster's account and
    /// points whoever owns the spell.
    pub async fn cast(&self, account: &AccountRow, req: CastRequest) -> Result<CastView, CastError> {
        if let Some(off) = self.feature_refusal("spells", account).await {
            return Err(CastError::Submit(SubmitError::Invalid(vec![off])));
        }
        if let Some(key) = &req.idempotency_key
            && let Some(cast) = self.cast_by_key(account, key).await?
        {
            return Ok(cast);
        }
        if req.spell.is_empty() || req.spell.len() > 200 || req.spell.chars().any(char::is_control) {
            return Err(CastError::UnknownSpell(req.spell));
        }
        let row = match self.store.spell(&req.spell).await? {
            Some(r) if r.visibility != "private" || account.may_access(Some(&r.owner_id)) => r,
            _ => return Err(CastError::UnknownSpell(req.spell)),
        };
        if account.suspended {
            return Err(SubmitError::Suspended.into());
        }
        let callback = self.check_callback_url(req.callback_url.as_deref()).await?;
        let (spell, checked) = self.spell_view(&row).await?;
        let Some(checked) = checked else {
            return Err(CastError::Broken { slug: spell.slug, reason: spell.broken.unwrap_or_default() });
        };
        let mut errors: Vec<FieldError> = vec![];
        for name in req.inputs.keys() {
            if !checked.inputs.iter().any(|i| &i.name == name) {
                let names: Vec<&str> = checked.inputs.iter().map(|i| i.name.as_str()).collect();
                errors.push(FieldError {
                    field: format!("inputs.{name}"),
                    reason: format!("this spell has no input {name}; it takes: {}", names.join(", ")),
                });
            }
        }
        let mut values: Map<String, Value> = Map::new();
        for input in &checked.inputs {
            let given = req.inputs.get(&input.name).filter(|v| !v.is_null()).map(|v| coerce_value(&input.def, v));
            match given.or_else(|| input.def.default.clone()) {
                Some(Value::Null) | None if input.def.required => errors.push(FieldError {
                    field: format!("inputs.{}", input.name),
                    reason: format!("required ({})", input.def.kind.as_str()),
                }),
                Some(v) if !v.is_null() => {
                    values.insert(input.name.clone(), v);
                }
                _ => {}
            }
        }
        // Each step checked as a submission; later steps' mapped images are
        // placeholders the checks take as the caster's own.
        let mut prepared = vec![];
        for (i, (tool, step)) in checked.steps.iter().enumerate() {
            let mut params = step.params.clone();
            let mut pending = vec![];
            let mut bindings = Map::new();
            // Which exposed input feeds which parameter, to name errors as the caster knows them.
            let mut fed_by: Map<String, Value> = Map::new();
            for (param, src) in &step.inputs_from {
                match Source::parse(src) {
                    Ok(Source::Input(name)) => {
                        fed_by.insert(param.clone(), Value::String(name.clone()));
                        if let Some(v) = values.get(&name) {
                            params.insert(param.clone(), v.clone());
                        }
                    }
                    Ok(Source::Step { step, index }) => {
                        let p = placeholder(step, index);
                        params.insert(param.clone(), Value::String(p.clone()));
                        pending.push(p);
                        bindings.insert(param.clone(), serde_json::json!([step, index]));
                    }
                    Err(_) => {}
                }
            }
            let sub = SubmitRequest {
                tool: tool.id.clone(),
                params,
                confirmed: true,
                source: req.source.clone(),
                ..Default::default()
            };
            match self.prepare_with(account, &sub, &pending).await {
                Ok(p) => prepared.push((p, bindings)),
                Err(SubmitError::Invalid(errs)) => {
                    for e in errs {
                        let field = match fed_by.get(&e.field).and_then(Value::as_str) {
                            Some(name) => format!("inputs.{name}"),
                            None => format!("step{}.{}", i + 1, e.field),
                        };
                        if !errors.iter().any(|x| x.field == field) {
                            errors.push(FieldError { field, reason: e.reason });
                        }
                    }
                }
                Err(SubmitError::UnknownTool(t)) => errors.push(FieldError {
                    field: format!("step{}.tool", i + 1),
                    reason: format!("{t} is not a tool you may use"),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        if !errors.is_empty() {
            return Err(SubmitError::Invalid(errors).into());
        }
        let price: i64 = prepared.iter().map(|(p, _)| p.price).sum();
        if !req.confirmed
            && let Some(threshold) = self.quote_threshold(account).await?
            && price > threshold
        {
            return Err(SubmitError::ConfirmationRequired { price, threshold }.into());
        }
        self.ensure_starting_grant(&account.id).await.map_err(SubmitError::from)?;
        let id = uuid::Uuid::now_v7().to_string();
        let terms = self.pay_terms(account, 0, None);
        let inputs = Value::Object(values).to_string();
        let first_job = prepared[0].0.job.id.clone();
        let new = NewCast {
            id: &id,
            spell_id: &row.id,
            account_id: &account.id,
            inputs: &inputs,
            callback_url: callback.as_deref(),
            idem_key: req.idempotency_key.as_deref(),
            steps: prepared.into_iter().map(|(p, b)| (p.job, p.price, Value::Object(b).to_string())).collect(),
            free_daily: terms.free_daily,
            max_queued: terms.max_queued,
        };
        let actor = format!("account:{}", account.id);
        if callback.is_some() {
            self.callback_secret(account).await?;
        }
        let stored = self.store.insert_cast(&new, &actor, station_store::now_ms()).await.map_err(SubmitError::from)?;
        if stored.id != id {
            // The same key won a race meanwhile: its cast is the answer.
            return Ok(self.cast_view_of(&stored.id).await?.expect("the cast exists"));
        }
        for (job, _, _) in &new.steps {
            crate::telemetry::job_submitted(&job.tool_id, &job.service);
        }
        info!(cast = %id, spell = %row.slug, steps = new.steps.len(), price, "spell cast");
        self.bus.publish(JobEvent::Status { job_id: first_job, status: JobStatus::Queued, error: None });
        self.wake.notify_waiters();
        Ok(self.cast_view_of(&id).await?.expect("the cast was just written"))
    }

    /// The cast queued with idempotency `key` by `account`, if any.
    async fn cast_by_key(&self, account: &AccountRow, key: &str) -> Result<Option<CastView>, StoreError> {
        let Some(job) = self.store.job_by_idem_key(key).await? else { return Ok(None) };
        if job.account_id != account.id {
            return Ok(None);
        }
        match self.store.cast_of_job(&job.id).await? {
            Some(cast) => self.cast_view_of(&cast).await,
            None => Ok(None),
        }
    }

    /// A cast `account` made (administrators: any), with its steps.
    pub async fn cast_view(&self, account: &AccountRow, cast_id: &str) -> Result<Option<CastView>, StoreError> {
        match self.store.cast(cast_id).await? {
            Some(c) if account.may_access(Some(&c.account_id)) => self.cast_view_of(cast_id).await,
            _ => Ok(None),
        }
    }

    /// The account's casts, newest first.
    pub async fn casts(&self, account: &AccountRow, limit: i64) -> Result<Vec<CastView>, StoreError> {
        let mut out = vec![];
        for c in self.store.list_casts(&account.id, limit).await? {
            if let Some(v) = self.cast_view_of(&c.id).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The cast a job is a step of, if it is one.
    pub async fn cast_of_job(&self, job_id: &str) -> Result<Option<String>, StoreError> {
        self.store.cast_of_job(job_id).await
    }

    /// A cast by id, with no access check: for the caster's own
    /// conversation (the chat notifier following its steps' jobs).
    pub async fn cast_view_of(&self, cast_id: &str) -> Result<Option<CastView>, StoreError> {
        let Some(c) = self.store.cast(cast_id).await? else { return Ok(None) };
        let steps = self.store.cast_steps(cast_id).await?;
        let spell = self.store.spell(&c.spell_id).await?;
        let name = |tool_id: &str| self.tools.get(tool_id).map(|t| t.name.clone()).unwrap_or_else(|| tool_id.into());
        let step_views: Vec<CastStepView> = steps
            .iter()
            .map(|(s, j)| {
                let parked = j.status() == JobStatus::Queued && j.run_after == station_store::PARKED;
                CastStepView {
                    step: s.step as usize + 1,
                    tool_id: s.tool_id.clone(),
                    tool_name: name(&s.tool_id),
                    job_id: j.id.clone(),
                    status: if parked { "waiting".into() } else { j.status.clone() },
                    progress: if j.status() == JobStatus::Succeeded { 1.0 } else { j.progress },
                    outputs: j.output_ids(),
                    error: j.error.clone().filter(|_| j.status().is_terminal()),
                }
            })
            .collect();
        let total = steps.len().max(1);
        let cur = (c.current_step as usize).min(total - 1);
        let current = steps.get(cur).map(|(_, j)| j);
        let tool_name = step_views.get(cur).map(|s| s.tool_name.clone()).unwrap_or_default();
        let done: f64 = step_views.iter().map(|s| s.progress.clamp(0.0, 1.0)).sum();
        let outputs = if c.status == "succeeded" {
            step_views.last().map(|s| s.outputs.clone()).unwrap_or_default()
        } else {
            vec![]
        };
        Ok(Some(CastView {
            progress_text: progress_text(&c.status, cur + 1, total, &tool_name, current),
            progress: if c.status == "succeeded" { 1.0 } else { done / total as f64 },
            id: c.id.clone(),
            spell: spell.as_ref().map(|s| s.slug.clone()).unwrap_or_default(),
            spell_name: spell.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            account_id: c.account_id.clone(),
            status: c.status.clone(),
            step: cur + 1,
            steps_total: steps.len(),
            price: c.price,
            outputs,
            error: c.error.clone(),
            inputs: serde_json::from_str(&c.inputs).unwrap_or_default(),
            steps: step_views,
            created_at: c.created_at,
            finished_at: c.finished_at,
        }))
    }

    /// Cancels a cast `account` made (administrators: any): the running
    /// step as [`Station::cancel`] does, the waiting ones at once with their
    /// points returned. `Ok(None)` when there is no such cast of theirs.
    pub async fn cancel_cast(&self, account: &AccountRow, cast_id: &str) -> Result<Option<CastView>, StoreError> {
        let Some(c) = self.store.cast(cast_id).await? else { return Ok(None) };
        if !account.may_access(Some(&c.account_id)) {
            return Ok(None);
        }
        if c.status == "running" {
            // The waiting steps first, so the running one cannot be followed.
            let steps = self.store.cast_steps(cast_id).await?;
            for (_, job) in steps.iter().rev() {
                if !job.status().is_terminal() {
                    self.cancel(account, &job.id).await?;
                }
            }
            self.advance_cast(cast_id).await?;
        }
        self.cast_view_of(cast_id).await
    }

    /// Moves a cast on from what is stored: binds and unparks the next step
    /// once the current one succeeded, ends the cast after its last step,
    /// or — a step failed or was cancelled — cancels the remaining steps
    /// (their points released) and ends the cast failed or cancelled.
    /// Idempotent and safe to run in several processes at once.
    pub async fn advance_cast(&self, cast_id: &str) -> Result<(), StoreError> {
        // Each pass either returns or moved the cast one step on.
        for _ in 0..=super::MAX_STEPS + 1 {
            let Some(cast) = self.store.cast(cast_id).await? else { return Ok(()) };
            if cast.status != "running" {
                return Ok(());
            }
            let steps = self.store.cast_steps(cast_id).await?;
            let cur = cast.current_step as usize;
            let Some((_, job)) = steps.get(cur) else {
                self.end_cast(&cast, &steps, cur, "failed", "the cast's steps are missing".into()).await?;
                return Ok(());
            };
            match job.status() {
                JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => return Ok(()),
                JobStatus::Failed | JobStatus::Cancelled => {
                    let status = if job.status() == JobStatus::Failed { "failed" } else { "cancelled" };
                    let why = job.error.clone().unwrap_or_else(|| status.to_string());
                    let name = self.tools.get(&job.tool_id).map(|t| t.name.clone()).unwrap_or(job.tool_id.clone());
                    let reason = format!("step {} ({name}) {status}: {why}", cur + 1);
                    self.end_cast(&cast, &steps, cur + 1, status, reason).await?;
                    return Ok(());
                }
                JobStatus::Succeeded if cur + 1 >= steps.len() => {
                    if self.store.finish_cast(cast_id, "succeeded", None, station_store::now_ms()).await? {
                        info!(cast = %cast_id, "cast succeeded");
                    }
                    return Ok(());
                }
                JobStatus::Succeeded => {
                    let (next_step, next) = &steps[cur + 1];
                    let parked = next.status() == JobStatus::Queued && next.run_after == station_store::PARKED;
                    if !parked {
                        if next.status().is_terminal() {
                            // Cancelled while the step before it ran.
                            let status = if next.status() == JobStatus::Failed { "failed" } else { "cancelled" };
                            let reason = format!("step {} {status} before it started", cur + 2);
                            self.end_cast(&cast, &steps, cur + 1, status, reason).await?;
                            return Ok(());
                        }
                        // Unparked by another process whose move we will read next.
                        continue;
                    }
                    let bindings: Map<String, Value> = serde_json::from_str(&next_step.bindings).unwrap_or_default();
                    let mut params = next.params_json();
                    let mut missing = None;
                    for (param, at) in &bindings {
                        let from = at.get(0).and_then(Value::as_u64).unwrap_or(0) as usize;
                        let index = at.get(1).and_then(Value::as_u64).unwrap_or(0) as usize;
                        let outputs = steps.get(from).map(|(_, j)| j.output_ids()).unwrap_or_default();
                        match outputs.get(index) {
                            Some(id) => {
                                params.insert(param.clone(), Value::String(format!("media:{id}")));
                            }
                            None => {
                                missing = Some(format!(
                                    "step {} made {} image(s) but step {} needs image {} of it for {param}",
                                    from + 1,
                                    outputs.len(),
                                    cur + 2,
                                    index + 1
                                ));
                            }
                        }
                    }
                    if let Some(reason) = missing {
                        self.end_cast(&cast, &steps, cur + 1, "failed", reason).await?;
                        return Ok(());
                    }
                    let now = station_store::now_ms();
                    if self.store.advance_cast(cast_id, cur as i64, &next.id, &params, now).await? {
                        info!(cast = %cast_id, step = cur + 2, "cast step queued");
                        self.bus.publish(JobEvent::Status {
                            job_id: next.id.clone(),
                            status: JobStatus::Queued,
                            error: None,
                        });
                        self.wake.notify_waiters();
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Cancels steps `from..` (releasing their holds), then ends the cast.
    async fn end_cast(
        &self,
        cast: &CastRow,
        steps: &[(station_store::CastStepRow, JobRow)],
        from: usize,
        status: &str,
        reason: String,
    ) -> Result<(), StoreError> {
        let now = station_store::now_ms();
        for (_, job) in steps.iter().skip(from) {
            if !job.status().is_terminal() {
                let row = self.store.cancel_job(&job.id, now).await?;
                if row.status() == JobStatus::Cancelled {
                    self.settle_job(&row.id, "system:cast").await?;
                    self.bus.publish(JobEvent::Status {
                        job_id: row.id.clone(),
                        status: JobStatus::Cancelled,
                        error: None,
                    });
                }
            }
        }
        if self.store.finish_cast(&cast.id, status, Some(&reason), now).await? {
            info!(cast = %cast.id, %status, %reason, "cast ended");
        }
        Ok(())
    }
}

/// Advances casts as their steps end: on every terminal job event of this
/// process's bus (other processes' too, on PostgreSQL), and by a sweep of
/// casts whose current step ended while nobody listened (a crash, a missed
/// event). Started with the workers.
pub(crate) async fn cast_loop(station: Station, stop: CancellationToken) {
    let mut events = station.bus.subscribe();
    let every = Duration::from_millis(station.config.queue.poll_ms.clamp(50, 1000));
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_sweep {
            match station.store.casts_due(100).await {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = station.advance_cast(&id).await {
                            warn!(cast = %id, error = %e, "could not advance the cast; will retry");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cast sweep failed"),
            }
            next_sweep = tokio::time::Instant::now() + every * 5;
        }
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_sweep) => continue,
            e = events.recv() => e,
        };
        let job_id = match event {
            Ok(JobEvent::Status { job_id, status, .. }) if status.is_terminal() => job_id,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                next_sweep = tokio::time::Instant::now();
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match station.store.cast_of_job(&job_id).await {
            Ok(Some(cast)) => {
                if let Err(e) = station.advance_cast(&cast).await {
                    warn!(%cast, error = %e, "could not advance the cast; the sweep will");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(job = %job_id, error = %e, "could not look up the job's cast"),
        }
    }
}
