//! The delivery service: sends stored deliveries through the platform
//! adapters (in order per conversation, with retries and a persisted
//! status), turns job events into throttled progress edits and result
//! messages, and closes idle flows.
//!
//! Job notifications are keyed (`progress:<job>`, `result:<job>`), so a
//! restarted process writes what it had not written yet and never twice; a
//! scan on start-up (and every few seconds) catches jobs that ended while no
//! process was listening.

use std::collections::HashMap;
use std::time::Duration;

use station_core::JobEvent;
use station_core::conversations::{DeliveryMark, DeliveryResult, DeliveryRow};
use station_core::{JobRow, JobStatus, now_ms};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::engine::Flows;
use crate::flow::Out;
use crate::outbox::{JobSource, mint_view, new_delivery};
use crate::platform::{Conversation, DeliveryKind, Outcome, Outgoing};
use crate::view::{Block, ImageRef, View};

/// The running delivery service; stop it with [`FlowsRunner::shutdown`].
pub struct FlowsRunner {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FlowsRunner {
    /// Stops sending (deliveries in flight finish first).
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

const LEASE_MS: i64 = 60_000;
const MAX_ATTEMPTS: i64 = 8;

/// How often old input keys ([`Flows::handle_once`]) are pruned.
const INPUT_PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long input keys are kept: 30 days.
const INPUT_KEYS_KEPT_MS: i64 = 30 * 86_400_000;

impl Flows {
    /// Starts the delivery service, the job notifier and the idle-flow sweeper.
    pub fn start(&self) -> FlowsRunner {
        let stop = CancellationToken::new();
        let mut tasks = vec![];
        let me = self.clone();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move { me.send_loop(s).await }));
        let me = self.clone();
        let s = stop.clone();
        let events = self.station().bus.subscribe();
        tasks.push(tokio::spawn(async move { me.notify_loop(events, s).await }));
        let me = self.clone();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut next_prune = tokio::time::Instant::now();
            loop {
                if let Err(e) = me.expire_idle().await {
                    tracing::warn!(error = %e, "could not close idle conversations");
                }
                if tokio::time::Instant::now() >= next_prune {
                    next_prune += INPUT_PRUNE_EVERY;
                    // Adapters replay an input only while it is unprocessed in
                    // their inbox; a month is far past any restart.
                    let before = now_ms() - INPUT_KEYS_KEPT_MS;
                    if let Err(e) = me.station().conversations().prune_inputs(before).await {
                        tracing::warn!(error = %e, "could not prune old input keys");
                    }
                }
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                }
            }
        }));
        FlowsRunner { stop, tasks }
    }

    async fn send_loop(&self, stop: CancellationToken) {
        let mut in_flight: tokio::task::JoinSet<Option<DeliveryMark>> = tokio::task::JoinSet::new();
        // How the sends that ended went, recorded together in one transaction
        // before the next claim (a conversation's next message waits for it:
        // its delivery is `sending` until then).
        let mut marks: Vec<DeliveryMark> = vec![];
        // Lapsed leases (a crashed sender) are rare: look for them every few
        // seconds, not on every pass of this loop.
        let mut next_requeue = tokio::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                while let Some(r) = in_flight.join_next().await {
                    marks.extend(r.ok().flatten());
                }
                self.record_marks(&mut marks).await;
                return;
            }
            while let Some(r) = in_flight.try_join_next() {
                marks.extend(r.ok().flatten());
            }
            self.record_marks(&mut marks).await;
            let names: Vec<String> = self.inner.platforms.read().expect("platforms").keys().cloned().collect();
            let store = self.station().conversations();
            let now = now_ms();
            if tokio::time::Instant::now() >= next_requeue {
                next_requeue = tokio::time::Instant::now() + Duration::from_secs(5);
                if let Err(e) = store.requeue_deliveries(now).await {
                    tracing::warn!(error = %e, "could not requeue deliveries");
                }
            }
            let claimed = match store.claim_deliveries(&names, &self.inner.owner, now, LEASE_MS, 32).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim deliveries");
                    vec![]
                }
            };
            let got = !claimed.is_empty();
            for d in claimed {
                let me = self.clone();
                in_flight.spawn(async move { me.send_one(d).await });
            }
            let wait = if got { Duration::from_millis(5) } else { Duration::from_millis(250) };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.inner.outbox.notified() => {}
                Some(r) = in_flight.join_next(), if !in_flight.is_empty() => marks.extend(r.ok().flatten()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Records the outcomes of ended sends (one transaction) and forgets them.
    async fn record_marks(&self, marks: &mut Vec<DeliveryMark>) {
        if marks.is_empty() {
            return;
        }
        if let Err(e) = self.station().conversations().finish_deliveries(marks, now_ms()).await {
            // Their leases lapse and they are sent again (at least once).
            tracing::warn!(deliveries = marks.len(), error = %e, "could not record delivery outcomes");
        }
        marks.clear();
    }

    /// Sends one claimed delivery; returns how it went, for the send loop to record.
    async fn send_one(&self, d: DeliveryRow) -> Option<DeliveryMark> {
        let platform = self.inner.platforms.read().expect("platforms").get(&d.platform).cloned();
        let store = self.station().conversations();
        let platform = platform?;
        let mark = |result: DeliveryResult, delay_progress: Option<(String, i64)>| DeliveryMark {
            id: d.id.clone(),
            owner: self.inner.owner.clone(),
            version_sent: d.version,
            result,
            delay_progress,
        };
        let (Ok(conv), Ok(view)) = (serde_json::from_str::<Conversation>(&d.conv_json), serde_json::from_str(&d.view))
        else {
            return Some(mark(DeliveryResult::Failed { error: "stored delivery is unreadable".into() }, None));
        };
        let kind = DeliveryKind::parse(&d.kind);
        let mut replace = d.message_ref.clone();
        // A job's progress message becomes its result (one message per job);
        // once the result is out, late progress edits must not touch it.
        let job = d.dedupe_key.as_deref().and_then(|k| k.split_once(':')).map(|(_, j)| j.to_string());
        match (kind, &job) {
            (DeliveryKind::Result, Some(job)) if replace.is_none() => {
                // Sent at least once (an edit may still be waiting: it is
                // dropped below). Its message before the card it took over:
                // a platform may have shown the progress as a new message in
                // the card's place (text cannot become a photo on Telegram).
                if let Ok(Some(p)) = store.delivery_by_key(&format!("progress:{job}")).await {
                    replace = p.message_ref;
                }
            }
            (DeliveryKind::Progress, Some(job)) => {
                if let Ok(Some(r)) = store.delivery_by_key(&format!("result:{job}")).await
                    && r.status != "pending"
                {
                    let r = DeliveryResult::Sent { message_ref: d.message_ref.clone(), next_at: now_ms() };
                    return Some(mark(r, None));
                }
            }
            _ => {}
        }
        if replace.is_none() {
            // A message it was written to replace: the card a job took over.
            replace = self.replace_target(d.replace_ref.as_deref()).await;
        }
        let out = Outgoing { delivery_id: d.id.clone(), kind, view, replace, account_id: d.account_id.clone() };
        // A secret for one person never goes through an adapter that cannot
        // keep it to them.
        let outcome = if out.view.private && !platform.delivers_privately() {
            Outcome::Permanent(format!("{} cannot deliver a private message; not sent", d.platform))
        } else {
            platform.deliver(&conv, &out).await
        };
        let now = now_ms();
        let outcome_kind =
            if matches!(outcome, Outcome::RetryAfter(_)) { OutcomeKind::RateLimited } else { OutcomeKind::Other };
        let result = match outcome {
            Outcome::Sent { message_ref } => {
                let next_at =
                    if kind == DeliveryKind::Progress { now + self.inner.settings.progress_every_ms } else { now };
                DeliveryResult::Sent { message_ref, next_at }
            }
            Outcome::RetryAfter(after) => {
                DeliveryResult::Retry { at: now + after.as_millis() as i64, error: "rate limited".into() }
            }
            Outcome::Transient(e) if d.attempts + 1 >= MAX_ATTEMPTS => {
                DeliveryResult::Failed { error: format!("gave up after {} attempts: {e}", d.attempts + 1) }
            }
            Outcome::Transient(e) => {
                let backoff = 500i64 * 2i64.pow(d.attempts.clamp(0, 7) as u32);
                DeliveryResult::Retry { at: now + backoff, error: e }
            }
            Outcome::Permanent(e) => DeliveryResult::Failed { error: e },
        };
        let counted = match (&outcome_kind, &result) {
            (_, DeliveryResult::Sent { .. }) => "sent",
            (OutcomeKind::RateLimited, _) => "rate_limited",
            (_, DeliveryResult::Retry { .. }) => "retry",
            (_, DeliveryResult::Failed { .. }) => "failed",
        };
        station_core::telemetry::delivery(&d.platform, counted);
        if let DeliveryResult::Failed { error } = &result {
            tracing::warn!(delivery = %d.id, conversation = %d.conversation, error = %error, "delivery failed for good");
        }
        // Throttle the conversation's other progress edits, recorded with this
        // outcome while the row is still `sending` (nothing else of the
        // conversation can be claimed before).
        let delay = match (&kind, &result) {
            (DeliveryKind::Progress, DeliveryResult::Sent { next_at, .. }) => Some((d.conversation.clone(), *next_at)),
            _ => None,
        };
        Some(mark(result, delay))
    }

    /// The platform message a delivery's `replace_ref` names: itself, or
    /// the message of the delivery it names ([`crate::outbox::DELIVERY_REF`]:
    /// a flow's card a job took over), if that was sent.
    async fn replace_target(&self, replace_ref: Option<&str>) -> Option<String> {
        let r = replace_ref?;
        match r.strip_prefix(crate::outbox::DELIVERY_REF) {
            None => Some(r.to_string()),
            Some(id) => match self.station().conversations().delivery(id).await {
                Ok(Some(card)) => card.message_ref,
                _ => None,
            },
        }
    }

    async fn notify_loop(&self, mut events: tokio::sync::broadcast::Receiver<JobEvent>, stop: CancellationToken) {
        // job id → its conversation (None: not from a conversation).
        let mut sources: HashMap<String, Option<JobSource>> = HashMap::new();
        // job id → the cast it is a step of (a conversation follows the cast).
        let mut casts: HashMap<String, Option<String>> = HashMap::new();
        let mut previews: HashMap<String, ImageRef> = HashMap::new();
        let mut scan = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = scan.tick() => {
                    if let Err(e) = self.catch_up().await {
                        tracing::warn!(error = %e, "could not write missed job results");
                    }
                    if let Err(e) = self.announce_deposits().await {
                        tracing::warn!(error = %e, "could not write deposit notices");
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        let job_id = ev.job_id().to_string();
                        if !sources.contains_key(&job_id) {
                            let src = match self.station().job(&job_id).await {
                                Ok(Some(job)) => JobSource::of(&job),
                                _ => None,
                            };
                            if sources.len() > 10_000 {
                                sources.clear();
                            }
                            sources.insert(job_id.clone(), src);
                        }
                        let Some(Some(src)) = sources.get(&job_id).cloned() else { continue };
                        if !casts.contains_key(&job_id) {
                            let cast = self.station().cast_of_job(&job_id).await.ok().flatten();
                            if casts.len() > 10_000 {
                                casts.clear();
                            }
                            casts.insert(job_id.clone(), cast);
                        }
                        if let JobEvent::Preview { mime, data, .. } = &ev {
                            previews.insert(job_id.clone(), ImageRef::inline(mime, data));
                        }
                        let written = match casts.get(&job_id).cloned().flatten() {
                            Some(cast) => self.on_cast_event(&src, &cast, &ev, previews.get(&job_id).cloned()).await,
                            None => self.on_event(&src, &ev, previews.get(&job_id).cloned()).await,
                        };
                        if let Err(e) = written {
                            tracing::warn!(job = %job_id, error = %e, "could not write a job notification");
                        }
                        if matches!(&ev, JobEvent::Status { status, .. } if status.is_terminal()) {
                            previews.remove(&job_id);
                            sources.remove(&job_id);
                            casts.remove(&job_id);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "notifier lagged; the periodic scan catches results");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }

    async fn on_event(
        &self,
        src: &JobSource,
        ev: &JobEvent,
        preview: Option<ImageRef>,
    ) -> Result<(), crate::flow::FlowError> {
        let Some(job) = self.station().job(ev.job_id()).await? else { return Ok(()) };
        if !job.status().is_terminal() && station_core::training::definition_for_tool(&job.tool_id).is_some() {
            self.write_training_notes(src, &job, ev).await?;
        }
        match ev {
            JobEvent::Progress { .. } | JobEvent::Preview { .. } => {
                if job.status().is_terminal() {
                    return Ok(());
                }
                let view = self.progress_view(&job, preview).await;
                self.write_progress(src, &job, view).await?;
            }
            JobEvent::Status { status, .. } if !status.is_terminal() => {
                let view = self.progress_view(&job, preview).await;
                self.write_progress(src, &job, view).await?;
            }
            JobEvent::Status { .. } | JobEvent::Result { .. } => {
                if job.status().is_terminal() {
                    self.write_result(src, &job).await?;
                }
            }
        }
        self.inner.outbox.notify_one();
        Ok(())
    }

    /// A step of a cast moved: the cast's one progress message is edited
    /// ("step 2 of 3: Upscale 40 %"), and once the cast has ended its result
    /// takes that message's place. A step that ended moves the cast on first
    /// (idempotent, as the cast loop does), so the last step's end is the
    /// cast's end here too.
    async fn on_cast_event(
        &self,
        src: &JobSource,
        cast_id: &str,
        ev: &JobEvent,
        preview: Option<ImageRef>,
    ) -> Result<(), crate::flow::FlowError> {
        let station = self.station();
        if matches!(ev, JobEvent::Status { status, .. } if status.is_terminal()) {
            station.advance_cast(cast_id).await?;
        }
        let Some(cast) = station.cast_view_of(cast_id).await? else { return Ok(()) };
        if cast.status == "running" {
            let mut view = self.cast_progress_view(&cast, preview);
            let now = now_ms();
            let actions = mint_view(&mut view, &cast.account_id, None, now);
            let out = Out { view, kind: DeliveryKind::Progress, dedupe_key: Some(format!("progress:cast-{cast_id}")) };
            let d = src.delivery(&cast.account_id, &out);
            station.conversations().save_outbox(&actions, &[d], true, None, now).await?;
        } else {
            self.write_cast_result(src, &cast).await?;
        }
        self.inner.outbox.notify_one();
        Ok(())
    }

    /// The progress message of a cast: its spell, where it stands, and a
    /// cancel button for the running step (which ends the cast).
    pub fn cast_progress_view(&self, cast: &station_core::spells::CastView, preview: Option<ImageRef>) -> View {
        let label = format!("{}: {}", cast.spell_name, cast.progress_text);
        let fraction = (cast.status == "running").then_some(cast.progress);
        let mut view = View::default().block(Block::Progress { fraction, label, preview });
        if cast.status == "running"
            && let Some(step) = cast.steps.get(cast.step.saturating_sub(1))
        {
            view = view.row(vec![
                crate::view::Button::action("Cancel", "cancel_job", serde_json::json!({"job": step.job_id})).danger(),
            ]);
        }
        view
    }

    /// Writes an ended cast's result message (once: keyed by the cast).
    async fn write_cast_result(
        &self,
        src: &JobSource,
        cast: &station_core::spells::CastView,
    ) -> Result<(), crate::flow::FlowError> {
        let now = now_ms();
        let mut view = crate::results::cast_result_view(self, cast).await?;
        let actions = mint_view(&mut view, &cast.account_id, None, now);
        let out = Out { view, kind: DeliveryKind::Result, dedupe_key: Some(format!("result:cast-{}", cast.id)) };
        let d = src.delivery(&cast.account_id, &out);
        self.station().conversations().save_outbox(&actions, &[d], false, None, now).await?;
        self.inner.outbox.notify_one();
        Ok(())
    }

    /// The progress message of a job.
    pub async fn progress_view(&self, job: &JobRow, preview: Option<ImageRef>) -> View {
        let tool = match self.station().tools.get(&job.tool_id) {
            Some(t) => t.name.clone(),
            None => station_core::training::definition_for_tool(&job.tool_id)
                .map_or_else(|| job.tool_id.clone(), |d| d.name.clone()),
        };
        // The core's wording: "queued, 2 ahead", "waiting for a GPU (3 ahead)"
        // (sent to a backend that has not started it), "running 45 %".
        let text = match job.status() {
            JobStatus::Queued | JobStatus::Dispatched => match self.station().job_view(&job.id).await {
                Ok(Some(v)) => v.status_text(),
                _ => station_core::jobs::status_text(job, None),
            },
            _ => station_core::jobs::status_text(job, None),
        };
        let fraction = match job.status() {
            JobStatus::Running => Some(job.progress),
            JobStatus::Succeeded => Some(1.0),
            _ => None,
        };
        let label = format!("{tool}: {text}");
        let mut view = View::default().block(Block::Progress { fraction, label, preview });
        if !job.status().is_terminal() {
            view = view.row(vec![
                crate::view::Button::action("Cancel", "cancel_job", serde_json::json!({"job": job.id})).danger(),
            ]);
        }
        view
    }

    async fn write_progress(
        &self,
        src: &JobSource,
        job: &JobRow,
        mut view: View,
    ) -> Result<(), crate::flow::FlowError> {
        let now = now_ms();
        let actions = mint_view(&mut view, &job.account_id, None, now);
        let out = Out { view, kind: DeliveryKind::Progress, dedupe_key: Some(format!("progress:{}", job.id)) };
        // A job that took its flow's card over names it from its first
        // message on, whether or not the step that submitted it is stored yet.
        let d = src.delivery(&job.account_id, &out);
        self.station().conversations().save_outbox(&actions, &[d], true, None, now).await?;
        Ok(())
    }

    /// A running training's notes, each a message of its own written once
    /// (keyed `train-start:<job>`, `train-25:<job>`, …): its start, and the
    /// highest milestone its trainer's steps reached. One that a restart made the process miss is written at the next
    /// progress report; a lower milestone passed meanwhile is not sent late.
    async fn write_training_notes(
        &self,
        src: &JobSource,
        job: &JobRow,
        ev: &JobEvent,
    ) -> Result<(), crate::flow::FlowError> {
        let (milestone, step, of) = match ev {
            // Milestones count the trainer's steps; the job's overall
            // fraction also moves with the nodes around it (loading,
            // encoding), which would tell "25 %" before any step ran.
            JobEvent::Progress { step, of, .. } => {
                let reached = match (step, of) {
                    (Some(s), Some(o)) if *o > 0 => station_core::training::milestone(*s as f64 / *o as f64),
                    _ => None,
                };
                (reached, *step, *of)
            }
            JobEvent::Status { status: JobStatus::Running, .. } => (None, None, None),
            _ => return Ok(()),
        };
        let store = self.station().conversations();
        let mut due = vec![];
        for (key, m) in [
            (Some(format!("train-start:{}", job.id)), None),
            (milestone.map(|m| format!("train-{m}:{}", job.id)), milestone),
        ] {
            let Some(key) = key else { continue };
            if store.delivery_by_key(&key).await?.is_none() {
                due.push((key, m));
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let (name, steps) = self.training_name(job).await?;
        let deliveries: Vec<_> = due
            .into_iter()
            .map(|(key, m)| {
                let view = match m {
                    None => crate::results::training_note_view(&name, None, None, of.or(steps)),
                    Some(_) => crate::results::training_note_view(&name, m, step, of),
                };
                new_delivery(
                    &src.conversation,
                    &job.account_id,
                    &Out { view, kind: DeliveryKind::Notice, dedupe_key: Some(key) },
                )
            })
            .collect();
        store.save_outbox(&[], &deliveries, false, None, now_ms()).await?;
        Ok(())
    }

    /// Whether `job` is a succeeded training whose LoRA is still being
    /// stored (or could not be completed just now, as when another task is
    /// completing it): for ten minutes after the job ended, its result waits.
    async fn training_still_storing(&self, job: &JobRow, now: i64) -> Result<bool, crate::flow::FlowError> {
        if job.status() != JobStatus::Succeeded || station_core::training::definition_for_tool(&job.tool_id).is_none() {
            return Ok(false);
        }
        if job.finished_at.is_some_and(|f| f < now - 600_000) {
            return Ok(false);
        }
        let station = self.station();
        let Some(owner) = station.account_by_id(&job.account_id).await? else { return Ok(false) };
        Ok(match station.training_for_job(&owner, &job.id).await {
            Ok(Some(t)) => t.lora.is_none() && t.row.error.is_none(),
            Ok(None) => false,
            Err(station_core::training::TrainingError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                tracing::debug!(job = %job.id, error = %e, "training not complete yet; its result waits");
                true
            }
        })
    }

    /// The name a training's notes give it (its dataset's, else its LoRA's
    /// slug) and its steps.
    async fn training_name(&self, job: &JobRow) -> Result<(String, Option<u64>), crate::flow::FlowError> {
        let station = self.station();
        let Some(owner) = station.account_by_id(&job.account_id).await? else { return Ok(("your LoRA".into(), None)) };
        match station.training_summary_for_job(&owner, &job.id).await {
            Ok(Some((name, steps))) => Ok((name, steps)),
            Ok(None) => Ok(("your LoRA".into(), None)),
            Err(station_core::training::TrainingError::Storage(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not read a training for its notes");
                Ok(("your LoRA".into(), None))
            }
        }
    }

    /// Writes a finished job's result message (once: keyed by the job) and
    /// the final state of its progress message.
    pub(crate) async fn write_result(&self, src: &JobSource, job: &JobRow) -> Result<(), crate::flow::FlowError> {
        let store = self.station().conversations();
        let now = now_ms();
        if self.training_still_storing(job, now).await? {
            // The result is written once: not while the LoRA is being
            // stored (the worker completes it after the job ends); the
            // periodic catch-up writes it a few seconds later.
            return Ok(());
        }
        // No final progress edit: the result (or the failure) takes the
        // progress message's place when it is sent (see `send_one`).
        let mut view = crate::results::result_view(self, job).await?;
        let actions = mint_view(&mut view, &job.account_id, None, now);
        let out = Out { view, kind: DeliveryKind::Result, dedupe_key: Some(format!("result:{}", job.id)) };
        let mut deliveries = vec![src.delivery(&job.account_id, &out)];
        // A training's end is also told as a message of its own (its result
        // takes the place of the progress message, far up the chat by now),
        // written with the result: once, or again never.
        if station_core::training::definition_for_tool(&job.tool_id).is_some() {
            let (name, _) = self.training_name(job).await?;
            if let Some(view) = crate::results::training_end_note(&name, job) {
                let key = Some(format!("train-end:{}", job.id));
                deliveries.push(new_delivery(
                    &src.conversation,
                    &job.account_id,
                    &Out { view, kind: DeliveryKind::Notice, dedupe_key: key },
                ));
            }
        }
        store.save_outbox(&actions, &deliveries, false, None, now).await?;
        self.inner.outbox.notify_one();
        Ok(())
    }

    /// Writes result messages for conversation jobs that ended without one
    /// (another process ran them, or this one died in between).
    pub async fn catch_up(&self) -> Result<usize, crate::flow::FlowError> {
        let since = now_ms() - 24 * 3600 * 1000;
        let jobs = self.station().conversations().undelivered_results(since, 100).await?;
        let mut n = jobs.len();
        for job in jobs {
            if let Some(src) = JobSource::of(&job) {
                self.write_result(&src, &job).await?;
            }
        }
        let casts = self.station().conversations().undelivered_cast_results(since, 100).await?;
        n += casts.len();
        for id in casts {
            let Some(cast) = self.station().cast_view_of(&id).await? else { continue };
            let Some(first) = cast.steps.first() else { continue };
            let Some(job) = self.station().job(&first.job_id).await? else { continue };
            if let Some(src) = JobSource::of(&job) {
                self.write_cast_result(&src, &cast).await?;
            }
        }
        Ok(n)
    }
}

/// Whether a send was refused for the platform's rate limit (counted apart
/// from other retries).
enum OutcomeKind {
    RateLimited,
    Other,
}
