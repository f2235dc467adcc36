//! Auto-captions: a dataset's captions written by the operator's caption
//! tool (`training.caption_tool`, a ComfyUI tool of category `caption` whose
//! workflow returns text). One job per image, each validated, priced, held
//! and settled like any job; each job's text goes into its image's caption
//! once, when the job ends — only into an empty caption (one that is no
//! more than the trigger word) unless the run was asked to overwrite, and
//! never over a caption someone wrote while the job ran.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use station_store::{AccountRow, DatasetCaptionRow, JobStatus};
use station_tools::{Category, InputType, ToolDef};

use crate::Station;
use crate::events::JobEvent;
use crate::jobs::{SubmitError, SubmitRequest};
use crate::training::{ORPHAN_AFTER_MS, TrainingError, with_trigger};

/// One image of a captioning run.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionItem {
    /// The image's slot in the dataset (None: removed since).
    pub position: Option<i64>,
    /// `pending`, `applied`, `kept` (a caption was there, or was written
    /// meanwhile), `failed` or `cancelled`.
    pub status: String,
    /// The caption the tool wrote, once it did.
    pub caption: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Progress of its job in [0, 1].
    pub progress: f64,
}

/// A dataset's latest captioning run.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionRun {
    /// Images the run captions.
    pub images: usize,
    /// Of those, how many have ended.
    pub done: usize,
    /// Captions written.
    pub applied: usize,
    /// Captions kept as they were.
    pub kept: usize,
    /// Images whose caption job failed or was cancelled.
    pub failed: usize,
    /// Some of its jobs are still queued or running.
    pub running: bool,
    /// Progress of the whole run in [0, 1].
    pub progress: f64,
    /// Points held for the run when it started (None when read later).
    pub price: Option<i64>,
    /// Every image of the run, in the order they were queued.
    pub items: Vec<CaptionItem>,
}

impl CaptionRun {
    /// One line for a person: "Captions: 3 of 6 written…" or the outcome.
    pub fn summary(&self) -> String {
        if self.running {
            return format!("Writing captions: {} of {} done", self.done, self.images);
        }
        let mut parts = vec![format!("{} written", self.applied)];
        if self.kept > 0 {
            parts.push(format!("{} kept as they were", self.kept));
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        format!("Captions done: {}", parts.join(", "))
    }
}

/// Longest caption a tool's text is cut to (the dataset's own limit).
const MAX_CAPTION: usize = 1000;

/// True when `caption` says nothing beyond the trigger word: blank, or the
/// trigger word with punctuation around it (what an image added without a
/// caption gets).
pub fn caption_is_empty(caption: &str, trigger: &str) -> bool {
    caption
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .all(|w| w.eq_ignore_ascii_case(trigger) || !w.chars().any(char::is_alphanumeric))
}

/// A tool's text as a caption: one line of text (control characters and
/// runs of spaces become one space), at most [`MAX_CAPTION`] characters with
/// the trigger word in front. Empty when the tool said nothing.
pub fn caption_from_text(text: &str, trigger: &str) -> String {
    let words: Vec<&str> =
        text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    let line = words.join(" ");
    if line.is_empty() {
        return String::new();
    }
    let room = MAX_CAPTION.saturating_sub(trigger.chars().count() + 2);
    let cut: String = line.chars().take(room).collect();
    with_trigger(&cut, trigger)
}

impl Station {
    /// The caption tool: `training.caption_tool`, else the first tool of
    /// category `caption`. Refused in words when there is none.
    pub fn caption_tool(&self) -> Result<Arc<ToolDef>, TrainingError> {
        let none = || TrainingError::Invalid {
            field: "captions".into(),
            reason: "automatic captions are not available: no caption tool is configured \
                     (an operator sets training.caption_tool); type the captions instead"
                .into(),
        };
        match &self.config.training.caption_tool {
            Some(id) => {
                let tool = self.tools.get(id).ok_or_else(none)?;
                if tool.category != Category::Caption {
                    return Err(TrainingError::Invalid {
                        field: "captions".into(),
                        reason: format!(
                            "automatic captions are not available: training.caption_tool names {id:?}, \
                             which is not a caption tool (category \"caption\")"
                        ),
                    });
                }
                Ok(tool)
            }
            None => {
                let mut tools: Vec<_> =
                    self.tools.list().into_iter().filter(|t| t.category == Category::Caption).collect();
                tools.sort_by(|a, b| a.id.cmp(&b.id));
                tools.into_iter().next().ok_or_else(none)
            }
        }
    }

    /// Starts writing a dataset's captions with the caption tool: one job
    /// per image whose caption is empty (every image with `overwrite`), each
    /// paid like any job. Refused when no caption tool is configured, while
    /// the dataset is trained or captioned already, when no caption is left
    /// to write, and when the account cannot pay for them all (then nothing
    /// is queued).
    pub async fn caption_dataset(
        &self,
        account: &AccountRow,
        key: &str,
        overwrite: bool,
    ) -> Result<CaptionRun, TrainingError> {
        if let Some(off) = self.feature_refusal("training", account).await {
            return Err(TrainingError::Invalid { field: off.field, reason: off.reason });
        }
        let dataset = self.dataset(account, key).await?;
        let tool = self.caption_tool()?;
        if dataset.row.status == "locked" {
            return Err(TrainingError::Invalid {
                field: "dataset".into(),
                reason: "is being trained; write captions when the training has ended".into(),
            });
        }
        if let Some(run) = self.caption_run(account, key).await?
            && run.running
        {
            return Err(TrainingError::Invalid {
                field: "dataset".into(),
                reason: format!("its captions are being written already ({} of {} done)", run.done, run.images),
            });
        }
        let input =
            tool.inputs.iter().find(|(_, i)| i.kind == InputType::Image).map(|(n, _)| n.clone()).ok_or_else(|| {
                TrainingError::Invalid {
                    field: "captions".into(),
                    reason: format!("the caption tool {:?} has no image input", tool.id),
                }
            })?;
        let trigger = dataset.row.trigger_word.clone();
        let targets: Vec<_> =
            dataset.images.iter().filter(|i| overwrite || caption_is_empty(&i.caption, &trigger)).collect();
        if targets.is_empty() {
            let reason = if dataset.images.is_empty() {
                "the dataset has no images yet"
            } else {
                "every image has a caption already; ask to overwrite them to write them all again"
            };
            return Err(TrainingError::Invalid { field: "captions".into(), reason: reason.into() });
        }
        // Every job checked and priced before any is queued.
        let mut prepared = Vec::with_capacity(targets.len());
        for image in &targets {
            let mut params = Map::new();
            params.insert(input.clone(), Value::String(format!("media:{}", image.media_id)));
            let req = SubmitRequest { tool: tool.id.clone(), params, confirmed: true, ..Default::default() };
            let p = self.prepare_tool(account, tool.clone(), &req, &[]).await?;
            prepared.push((image.media_id.clone(), p));
        }
        let total: i64 = prepared.iter().map(|(_, p)| p.price).sum();
        self.ensure_starting_grant(&account.id).await.map_err(SubmitError::from)?;
        let terms = self.pay_terms(account, total, None);
        let plan =
            self.store.plan_payment(&account.id, &terms, station_store::now_ms()).await.map_err(SubmitError::from)?;
        if plan.available < total {
            return Err(SubmitError::InsufficientPoints { needed: total, available: plan.available }.into());
        }
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let actor = format!("account:{}", account.id);
        let mut queued = 0usize;
        for (media_id, p) in prepared {
            let now = station_store::now_ms();
            let row = DatasetCaptionRow {
                job_id: p.job.id.clone(),
                run_id: run_id.clone(),
                dataset_id: dataset.row.id.clone(),
                account_id: account.id.clone(),
                media_id,
                overwrite,
                status: "pending".into(),
                caption: None,
                error: None,
                created_at: now,
                finished_at: None,
            };
            // The record first (durable), then its paid job. The run is
            // bounded by the dataset's size, so the queue limit does not
            // cut it short.
            self.store.insert_dataset_caption(&row).await?;
            let mut terms = self.pay_terms(account, p.price, None);
            terms.max_queued = None;
            match self.store.insert_job_paid_keyed(&p.job, &terms, &actor, None, now).await {
                Ok(station_store::Placed::New(job, _) | station_store::Placed::Existing(job)) => {
                    queued += 1;
                    crate::telemetry::job_submitted(&job.tool_id, &job.service);
                    self.bus.publish(JobEvent::Status { job_id: job.id, status: JobStatus::Queued, error: None });
                }
                Err(e) => {
                    self.store.delete_dataset_caption(&p.job.id).await?;
                    if queued == 0 {
                        return Err(SubmitError::from(e).into());
                    }
                    // Some are queued: they run; the rest stay empty to ask again.
                    tracing::warn!(dataset = %dataset.row.id, error = %e, "a caption job was refused; the run is shorter");
                    break;
                }
            }
        }
        self.wake.notify_waiters();
        let mut run = self
            .caption_run(account, key)
            .await?
            .ok_or_else(|| TrainingError::NotFound("the captioning run vanished as it started".into()))?;
        run.price = Some(total);
        Ok(run)
    }

    /// The dataset's latest captioning run (None: never captioned by a tool).
    pub async fn caption_run(&self, account: &AccountRow, key: &str) -> Result<Option<CaptionRun>, TrainingError> {
        let dataset = self.dataset(account, key).await?;
        let rows = self.store.latest_caption_run(&dataset.row.id).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let progress = match r.status.as_str() {
                "pending" => self.store.get_job(&r.job_id).await?.map(|j| j.progress).unwrap_or(0.0),
                _ => 1.0,
            };
            items.push(CaptionItem {
                position: dataset.images.iter().find(|i| i.media_id == r.media_id).map(|i| i.position),
                status: r.status.clone(),
                caption: r.caption.clone(),
                error: r.error.clone(),
                progress,
            });
        }
        let count = |s: &str| items.iter().filter(|i| i.status == s).count();
        let pending = count("pending");
        let images = items.len();
        let progress = items.iter().map(|i| i.progress.clamp(0.0, 1.0)).sum::<f64>() / images as f64;
        Ok(Some(CaptionRun {
            images,
            done: images - pending,
            applied: count("applied"),
            kept: count("kept"),
            failed: count("failed") + count("cancelled"),
            running: pending > 0,
            progress,
            price: None,
            items,
        }))
    }

    /// Applies the caption job `job_id` once it has ended: its text into its
    /// image's caption (empty ones only, unless the run overwrites), or the
    /// record ends failed or cancelled. Idempotent: safe from the worker and
    /// the sweeper at once.
    pub async fn complete_caption_for_job(&self, job_id: &str) -> Result<(), TrainingError> {
        let Some(row) = self.store.dataset_caption_by_job(job_id).await? else { return Ok(()) };
        if row.status != "pending" {
            return Ok(());
        }
        let now = station_store::now_ms();
        let end = |status: &'static str, caption: Option<String>, expected: Option<String>, error: Option<String>| {
            let store = self.store.clone();
            async move {
                store
                    .end_dataset_caption(job_id, status, caption.as_deref(), expected.as_deref(), error.as_deref(), now)
                    .await
            }
        };
        let Some(job) = self.store.get_job(job_id).await? else {
            // A process died between the record and its job: nothing was held.
            if row.created_at < now - ORPHAN_AFTER_MS {
                let why = "its job was never queued (Station stopped while starting it); nothing was charged";
                end("failed", None, None, Some(why.into())).await?;
            }
            return Ok(());
        };
        match job.status() {
            JobStatus::Queued | JobStatus::Dispatched | JobStatus::Running => return Ok(()),
            JobStatus::Cancelled => {
                end("cancelled", None, None, Some("cancelled".into())).await?;
                return Ok(());
            }
            JobStatus::Failed => {
                let why = job.error.clone().unwrap_or_else(|| "the caption tool failed".into());
                end("failed", None, None, Some(why)).await?;
                return Ok(());
            }
            JobStatus::Succeeded => {}
        }
        let Some(dataset) = self.store.get_dataset(&row.dataset_id).await? else {
            end("failed", None, None, Some("the dataset is gone".into())).await?;
            return Ok(());
        };
        let images = self.store.dataset_images(&dataset.id).await?;
        let Some(image) = images.iter().find(|i| i.media_id == row.media_id) else {
            end("failed", None, None, Some("the image left the dataset".into())).await?;
            return Ok(());
        };
        let mut text = String::new();
        for id in job.output_ids() {
            let (_, bytes) = self.media.get(&id, None).await?;
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        let caption = caption_from_text(&text, &dataset.trigger_word);
        if caption.is_empty() {
            end("failed", None, None, Some("the caption tool returned no text".into())).await?;
            return Ok(());
        }
        if !row.overwrite && !caption_is_empty(&image.caption, &dataset.trigger_word) {
            end("kept", Some(caption), None, None).await?;
            return Ok(());
        }
        end("applied", Some(caption), Some(image.caption.clone()), None).await?;
        Ok(())
    }

    /// Completes every caption job that ended without its text applied (a
    /// process died in between). Returns how many it looked at.
    pub async fn complete_captions(&self) -> Result<usize, TrainingError> {
        let open = self.store.dataset_captions_to_complete(station_store::now_ms() - ORPHAN_AFTER_MS).await?;
        let n = open.len();
        for c in open {
            self.complete_caption_for_job(&c.job_id).await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_captions_and_tool_text() {
        assert!(caption_is_empty("tomcat", "tomcat"));
        assert!(caption_is_empty("  ", "tomcat"));
        assert!(caption_is_empty("TomCat, ", "tomcat"));
        assert!(!caption_is_empty("tomcat, a cat", "tomcat"));
        assert_eq!(caption_from_text("  a red\n\tsquare ", "tomcat"), "tomcat, a red square");
        assert_eq!(caption_from_text("\n", "tomcat"), "");
        assert_eq!(caption_from_text("tomcat sleeping", "tomcat"), "tomcat sleeping");
        assert!(caption_from_text(&"x".repeat(5000), "tomcat").chars().count() <= MAX_CAPTION);
    }
}
