//! A person's own jobs: lookups that check ownership once for every front
//! end (the owner or an administrator; anyone else is told "not found",
//! exactly as for an id that does not exist), the owner's marks (rating,
//! hidden), history pages, result media and reruns.

use serde_json::{Map, Value, json};
use station_store::{AccountRow, GenerationFilter, JobFilter, JobRow, JobStatus, MediaRow, RatedJob, StoreError};
use station_tools::InputType;

use crate::Station;
use crate::jobs::{JobStatusView, SubmitRequest};

/// Why a job lookup or action was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobAccessError {
    /// No such job, or it belongs to someone else (deliberately one answer).
    #[error("no generation {0}")]
    NotFound(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
}

/// Why a rating was refused.
#[derive(Debug, thiserror::Error)]
pub enum RatingError {
    /// Stars outside 1–5.
    #[error("stars: expected a whole number from 1 to 5, got {0}")]
    OutOfRange(i64),
    /// The job cannot be seen by the caller.
    #[error(transparent)]
    Access(#[from] JobAccessError),
}

impl From<StoreError> for RatingError {
    fn from(e: StoreError) -> RatingError {
        RatingError::Access(e.into())
    }
}

/// The longest search text used for a history search; more is cut off.
pub const MAX_SEARCH_CHARS: usize = 200;

/// One page of an account's generations, newest first.
#[derive(Debug, Clone)]
pub struct GenerationPage {
    /// The jobs with the owner's rating.
    pub items: Vec<RatedJob>,
    /// The id to pass as `before_id` for the next page; None on the last page.
    pub next: Option<String>,
}

impl Station {
    /// Job `id`, whoever owns it: for the core's own services and delivery
    /// to where the job came from (people get [`Station::job_for`]).
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.store.get_job(id).await
    }

    /// `account`'s queued, dispatched and running jobs, running first, at most `limit`.
    pub async fn active_jobs(&self, account: &AccountRow, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let mut active = vec![];
        for status in [JobStatus::Running, JobStatus::Dispatched, JobStatus::Queued] {
            let f =
                JobFilter { account_id: Some(account.id.clone()), status: Some(status), limit, ..Default::default() };
            active.extend(self.store.list_jobs(&f).await?);
        }
        active.truncate(limit.max(0) as usize);
        Ok(active)
    }

    /// Job `id` if `account` may see it (its owner or an administrator).
    pub async fn job_for(&self, account: &AccountRow, id: &str) -> Result<JobRow, JobAccessError> {
        match self.store.get_job(id).await? {
            Some(j) if account.may_access(Some(&j.account_id)) => Ok(j),
            _ => Err(JobAccessError::NotFound(id.to_string())),
        }
    }

    /// [`Station::job_status`] of a job `account` may see: one query for the
    /// row, its marks and (queued only) its queue position.
    pub async fn job_status_for(&self, account: &AccountRow, id: &str) -> Result<JobStatusView, JobAccessError> {
        match self.job_status(id).await? {
            Some(s) if account.may_access(Some(&s.view.row.account_id)) => Ok(s),
            _ => Err(JobAccessError::NotFound(id.to_string())),
        }
    }

    /// The job an earlier submission of `account` with idempotency key `key`
    /// queued, if any — so a front end can answer a repeated request before
    /// reading its body (a repeated upload is not stored again). A key used
    /// by another account answers None here; [`Station::submit`] refuses it.
    pub async fn job_by_idempotency_key(&self, account: &AccountRow, key: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self.store.job_by_idem_key(key).await?.filter(|j| j.account_id == account.id))
    }

    /// Rates a job 1–5 stars for its owner.
    pub async fn rate_job(&self, account: &AccountRow, id: &str, stars: i64) -> Result<JobRow, RatingError> {
        if !(1..=5).contains(&stars) {
            return Err(RatingError::OutOfRange(stars));
        }
        let job = self.job_for(account, id).await?;
        self.store.mark_job(&job.id, &job.account_id, Some(stars), None, station_store::now_ms()).await?;
        Ok(job)
    }

    /// Hides a job from its owner's history (its images stay reachable by id).
    pub async fn hide_job(&self, account: &AccountRow, id: &str) -> Result<JobRow, JobAccessError> {
        let job = self.job_for(account, id).await?;
        self.store.mark_job(&job.id, &job.account_id, None, Some(true), station_store::now_ms()).await?;
        Ok(job)
    }

    /// The owner's rating and hidden mark of a job.
    pub async fn job_marks(&self, job: &JobRow) -> Result<(Option<i64>, bool), StoreError> {
        self.store.job_mark(&job.id).await
    }

    /// A page of `account`'s generations (the filter's `account_id` is
    /// replaced by the account's own id: nobody lists someone else's here).
    pub async fn generations(
        &self,
        account: &AccountRow,
        mut filter: GenerationFilter,
    ) -> Result<GenerationPage, StoreError> {
        filter.account_id = account.id.clone();
        // Searching: words as typed, blank is no search, at most 200 characters.
        filter.text = filter
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.chars().take(MAX_SEARCH_CHARS).collect());
        let limit = filter.limit.clamp(1, 200);
        filter.limit = limit + 1;
        let mut items = self.store.list_generations(&filter).await?;
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next = if more { items.last().map(|r| r.job.id.clone()) } else { None };
        Ok(GenerationPage { items, next })
    }

    /// A page of `account`'s succeeded, not hidden jobs, newest first, by
    /// offset (chat history pages), with the total count.
    pub async fn history_page(
        &self,
        account: &AccountRow,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<JobRow>, i64), StoreError> {
        self.store.history_page(&account.id, offset, limit).await
    }

    /// The stored result images of a job, in output order (missing rows skipped).
    pub async fn job_outputs(&self, job: &JobRow) -> Result<Vec<MediaRow>, StoreError> {
        let mut out = vec![];
        for id in job.output_ids() {
            if let Some(m) = self.store.get_media(&id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// A job's parameters as a user could send them again: internal keys
    /// (applied LoRAs, warnings) and inputs the tool no longer has removed;
    /// seeds reset to random when `new_seed`.
    pub fn reusable_params(&self, job: &JobRow, new_seed: bool) -> Map<String, Value> {
        let mut params = job.params_json();
        params.retain(|k, _| !k.starts_with('_'));
        if let Some(tool) = self.tools.get(&job.tool_id) {
            params.retain(|k, _| tool.inputs.contains_key(k));
            if new_seed {
                for (name, input) in &tool.inputs {
                    if input.kind == InputType::Seed {
                        params.insert(name.clone(), json!(-1));
                    }
                }
            }
        }
        params
    }

    /// The request that runs job `id` of `account` again with a new seed,
    /// `overrides` replacing some parameters.
    pub async fn rerun_request(
        &self,
        account: &AccountRow,
        id: &str,
        overrides: Map<String, Value>,
    ) -> Result<SubmitRequest, JobAccessError> {
        let job = self.job_for(account, id).await?;
        let mut params = self.reusable_params(&job, true);
        params.extend(overrides);
        Ok(SubmitRequest { tool: job.tool_id.clone(), params, ..Default::default() })
    }
}
