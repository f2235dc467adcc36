//! Cook (issue 24, items 4–7): generative collections from a trait tree.
//!
//! A collection's **recipe** ([`Recipe`]) names a tool (or a spell), fixed
//! parameters and a trait tree; [`Station::save_recipe`] checks it with
//! every error named by field — placeholders, weights, supply, the tool and
//! the parameters the tool refuses — before it is stored.
//!
//! A **cook** ([`Station::start_cook`]) draws every piece at once — traits,
//! parameter snapshot, seed, all from the cook seed and the piece number —
//! and writes them with the cook in one transaction, before any job exists.
//! The workers' [`cook_loop`] drives it under a per-cook lease: it records
//! the end of each submitted piece's job, then submits pending pieces until
//! `collections.max_in_flight` are out. Each submission carries the
//! idempotency key `cook:<collection>:<number>:<attempt>`, so a crash
//! between a job being queued and its piece recording it queues (and
//! charges) nothing twice: the next pass gets the same job back. The jobs
//! are ordinary generations of the cooking account, on its points and its
//! fair key. Pause stops submitting; resume goes on; stop marks the pieces
//! not yet submitted and cancels the queued ones (their holds released).
//!
//! **Review**: the owner and the recipe's named reviewers claim pieces for
//! five minutes ([`CLAIM_MS`]) — a claim is a conditional write, so two
//! reviewers never hold one piece — and accept, reject or regenerate them
//! (a new attempt: same traits, new seed, new job). **Cull** keeps a target
//! number of accepted pieces; [`Station::trait_stats`] compares how often
//! each trait occurs with its weight. Export with NFT metadata is in
//! [`export`].

pub mod export;
pub mod recipe;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use station_store::{AccountRow, CookPieceRow, CookRow, JobStatus, PieceCounts, now_ms};
use station_tools::{FieldError, InputType};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use recipe::{Chosen, Drawer, Recipe, piece_seed};

use crate::Station;
use crate::collections::{CollectionError, new_id};
use crate::events::JobEvent;
use crate::jobs::{SubmitError, SubmitRequest};
use crate::spells::{CastError, CastRequest};

/// How long a reviewer's claim on a piece lasts: 5 minutes.
pub const CLAIM_MS: i64 = 5 * 60 * 1000;
/// The most pieces one claim takes.
pub const MAX_CLAIM: i64 = 50;

/// A cook as every front end shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CookView {
    /// The collection.
    pub collection_id: String,
    /// `running`, `paused`, `stopped` or `done`.
    pub status: String,
    /// Why it paused or stopped by itself.
    pub reason: Option<String>,
    /// The cook seed (with the recipe, it reproduces every piece).
    pub seed: i64,
    /// Pieces to make.
    pub total: i64,
    /// Pieces made.
    pub done: i64,
    /// Pieces whose job failed.
    pub failed: i64,
    /// Pieces whose job is queued or running.
    pub in_flight: i64,
    /// Pieces not yet submitted.
    pub pending: i64,
    /// Pieces never made (stopped).
    pub stopped: i64,
    /// Made pieces accepted by review.
    pub accepted: i64,
    /// Made pieces rejected by review.
    pub rejected: i64,
    /// Accepted pieces the cull keeps.
    pub kept: i64,
    /// Where it stands, for people: "running: 120 of 200 made, 2 failed".
    pub progress_text: String,
    /// Started (Unix ms).
    pub created_at: i64,
}

/// One piece as front ends show it.
#[derive(Debug, Clone, Serialize)]
pub struct PieceView {
    /// Id.
    pub id: String,
    /// Its collection.
    pub collection_id: String,
    /// 1-based number.
    pub number: i64,
    /// Regenerations so far.
    pub attempt: i64,
    /// Its seed.
    pub seed: i64,
    /// Its traits.
    pub traits: Vec<Chosen>,
    /// The parameters its job runs with.
    pub params: Map<String, Value>,
    /// `pending`, `submitted`, `succeeded`, `failed`, `stopped`.
    pub status: String,
    /// Its job (or cast, for a spell).
    pub job_id: Option<String>,
    /// Its image.
    pub media_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// `unreviewed`, `accepted`, `rejected`.
    pub review: String,
    /// Who decided.
    pub reviewed_by: Option<String>,
    /// Who holds it for review.
    pub claimed_by: Option<String>,
    /// Until then (Unix ms).
    pub claim_expires_at: Option<i64>,
    /// Kept by the cull (accepted pieces).
    pub kept: bool,
}

impl From<CookPieceRow> for PieceView {
    fn from(p: CookPieceRow) -> PieceView {
        PieceView {
            traits: serde_json::from_str(&p.traits).unwrap_or_default(),
            params: serde_json::from_str(&p.params).unwrap_or_default(),
            id: p.id,
            collection_id: p.collection_id,
            number: p.number,
            attempt: p.attempt,
            seed: p.seed,
            status: p.status,
            job_id: p.job_id,
            media_id: p.media_id,
            error: p.error,
            review: p.review,
            reviewed_by: p.reviewed_by,
            claimed_by: p.claimed_by,
            claim_expires_at: p.claim_expires_at,
            kept: p.kept == 1,
        }
    }
}

/// What a cook would cost ([`Station::cook_quote`]).
#[derive(Debug, Clone, Serialize)]
pub struct CookQuote {
    /// Pieces the recipe makes.
    pub supply: i64,
    /// Points per piece (`None` for a spell: priced per cast).
    pub per_piece: Option<i64>,
    /// Points for the whole supply.
    pub total: Option<i64>,
    /// Points the account can spend now.
    pub available: i64,
    /// For people: "100 pieces × 3 points = 300 points; you have 250 points …".
    pub text: String,
}

/// One piece to review, as a chat card shows it ([`Station::review_card`]).
#[derive(Debug, Clone, Serialize)]
pub struct ReviewCard {
    /// The collection's name.
    pub collection_name: String,
    /// The piece claimed for the reviewer; `None` when none is left.
    pub piece: Option<PieceView>,
    /// Its image's MIME type.
    pub mime: Option<String>,
    /// Where the cook stands.
    pub cook: CookView,
    /// For people: "12 of 40 made reviewed: 10 accepted, 2 rejected".
    pub review_text: String,
}

/// A reviewer's decision on a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it in the collection.
    Accept,
    /// Leave it out.
    Reject,
    /// Make it again: same traits, a new seed, a new job.
    Regenerate,
}

impl Decision {
    /// Parses `accept`, `reject`, `regenerate`.
    pub fn parse(s: &str) -> Option<Decision> {
        match s.trim() {
            "accept" => Some(Decision::Accept),
            "reject" => Some(Decision::Reject),
            "regenerate" => Some(Decision::Regenerate),
            _ => None,
        }
    }
}

/// How often one trait occurs against its weight.
#[derive(Debug, Clone, Serialize)]
pub struct TraitStat {
    /// The category.
    pub category: String,
    /// The trait.
    pub name: String,
    /// Its weight.
    pub weight: f64,
    /// The share its weight asks for (weight / the category's total).
    pub expected: f64,
    /// Pieces that have it.
    pub occurrences: i64,
    /// Their share of the pieces counted.
    pub share: f64,
}

/// Trait statistics of a cook.
#[derive(Debug, Clone, Serialize)]
pub struct TraitStats {
    /// `made` (every piece made) or `kept` (accepted and kept).
    pub scope: String,
    /// Pieces counted.
    pub pieces: i64,
    /// One row per weighted trait, in the recipe's order (ranges have no
    /// weights and are left out).
    pub traits: Vec<TraitStat>,
}

fn invalid(field: &str, reason: impl Into<String>) -> CollectionError {
    CollectionError::Invalid(vec![FieldError { field: field.into(), reason: reason.into() }])
}

fn progress_text(status: &str, reason: Option<&str>, c: &PieceCounts, total: i64) -> String {
    let mut s = match status {
        "running" => format!("cooking: {} of {total} made", c.succeeded),
        "paused" => format!("paused: {} of {total} made", c.succeeded),
        "stopped" => format!("stopped: {} of {total} made", c.succeeded),
        _ => format!("done: {} of {total} made", c.succeeded),
    };
    if c.submitted > 0 {
        s.push_str(&format!(", {} in progress", c.submitted));
    }
    if c.failed > 0 {
        s.push_str(&format!(", {} failed", c.failed));
    }
    if let Some(r) = reason {
        s.push_str(&format!(" ({r})"));
    }
    s
}

/// Where a stored piece list says pieces stand, as a view.
fn cook_view(cook: &CookRow, c: &PieceCounts) -> CookView {
    CookView {
        collection_id: cook.collection_id.clone(),
        status: cook.status.clone(),
        reason: cook.reason.clone(),
        seed: cook.seed,
        total: cook.total,
        done: c.succeeded,
        failed: c.failed,
        in_flight: c.submitted,
        pending: c.pending,
        stopped: c.stopped,
        accepted: c.accepted,
        rejected: c.rejected,
        kept: c.kept,
        progress_text: progress_text(&cook.status, cook.reason.as_deref(), c, cook.total),
        created_at: cook.created_at,
    }
}

impl Station {
    /// Checks and saves the recipe of a collection `account` owns: the
    /// trait tree (every error named by field), the reviewers (account ids
    /// or identities like `telegram:123`), the tool or spell, and the
    /// parameters of sample pieces as the tool would check a submission.
    pub async fn save_recipe(
        &self,
        account: &AccountRow,
        collection_id: &str,
        recipe: &Value,
    ) -> Result<Recipe, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let c = self.owned(account, collection_id).await?;
        let mut r = Recipe::parse(recipe, self.config.collections.max_supply).map_err(CollectionError::Invalid)?;
        let mut bad = vec![];
        let mut ids = vec![];
        for (i, who) in r.reviewers.iter().enumerate() {
            let found = match self.store.get_account(who).await? {
                Some(a) => Some(a),
                None => match who.split_once(':') {
                    Some((p, s)) => self.store.account_by_identity(p.trim(), s.trim()).await?,
                    None => None,
                },
            };
            match found {
                Some(a) if !ids.contains(&a.id) => ids.push(a.id),
                Some(_) => {}
                None => bad.push(FieldError {
                    field: format!("reviewers[{i}]"),
                    reason: format!("no account {who:?} (give an account id or an identity like telegram:123)"),
                }),
            }
        }
        r.reviewers = ids;
        bad.extend(self.check_recipe_maker(account, &r).await?);
        if !bad.is_empty() {
            return Err(CollectionError::Invalid(bad));
        }
        self.store.put_cook_recipe(&c.id, &r.to_json().to_string(), &account.id, now_ms()).await?;
        info!(collection = %c.id, supply = r.supply, "cook recipe saved");
        Ok(r)
    }

    /// The recipe of a collection `account` may review (owner, reviewer).
    pub async fn recipe_of(
        &self,
        account: &AccountRow,
        collection_id: &str,
    ) -> Result<Option<Recipe>, CollectionError> {
        self.reviewer_access(account, collection_id).await?;
        self.stored_recipe(collection_id).await
    }

    async fn stored_recipe(&self, collection_id: &str) -> Result<Option<Recipe>, CollectionError> {
        match self.store.cook_recipe(collection_id).await? {
            Some(text) => Ok(Some(parse_stored(&text)?)),
            None => Ok(None),
        }
    }

    /// Whether the tool (or spell) exists for `account` and takes sample
    /// pieces' parameters: the first piece, and one with every category's
    /// longest value. Problems are returned named (`tool`, `params.NAME`).
    async fn check_recipe_maker(&self, account: &AccountRow, r: &Recipe) -> Result<Vec<FieldError>, CollectionError> {
        let mut bad = vec![];
        let drawer = Drawer::new(r, 0);
        let first = drawer.traits(1);
        let longest: Vec<Chosen> = r
            .categories
            .iter()
            .zip(&first)
            .map(|(c, f)| match &c.kind {
                recipe::CategoryKind::Traits { traits } => {
                    let t = traits.iter().max_by_key(|t| t.value.chars().count()).unwrap_or(&traits[0]);
                    Chosen { category: c.name.clone(), name: t.name.clone(), value: t.value.clone() }
                }
                recipe::CategoryKind::Range(_) => f.clone(),
            })
            .collect();
        if let Some(tool) = &r.tool {
            for chosen in [&first, &longest] {
                let params = self.piece_params(r, chosen, 1);
                let req = SubmitRequest { tool: tool.clone(), params, ..Default::default() };
                match self.prepare(account, &req).await {
                    Ok(_) => {}
                    Err(SubmitError::UnknownTool(t)) => {
                        bad.push(FieldError {
                            field: "tool".into(),
                            reason: format!("no tool {t:?} (`station tools list` shows them)"),
                        });
                        break;
                    }
                    Err(SubmitError::Invalid(errs)) => {
                        for e in errs {
                            let field = format!("params.{}", e.field);
                            if !bad.iter().any(|b: &FieldError| b.field == field) {
                                bad.push(FieldError { field, reason: e.reason });
                            }
                        }
                    }
                    Err(SubmitError::Storage(e)) => return Err(e.into()),
                    // Points, quotas and suspension apply when the pieces are submitted.
                    Err(_) => {}
                }
            }
        } else if let Some(slug) = &r.spell {
            match self.spell(account, slug).await? {
                None => bad.push(FieldError {
                    field: "spell".into(),
                    reason: format!("no spell {slug:?} you can cast (`station spells list` shows them)"),
                }),
                Some(s) if s.broken.is_some() => bad.push(FieldError {
                    field: "spell".into(),
                    reason: format!("the spell is broken: {}", s.broken.unwrap_or_default()),
                }),
                Some(s) => {
                    for k in r.params.keys() {
                        if !s.inputs.iter().any(|i| &i.name == k) {
                            let known: Vec<&str> = s.inputs.iter().map(|i| i.name.as_str()).collect();
                            bad.push(FieldError {
                                field: format!("params.{k}"),
                                reason: format!("the spell has no input {k:?} (its inputs: {})", known.join(", ")),
                            });
                        }
                    }
                    for i in s.inputs.iter().filter(|i| i.def.required && i.def.default.is_none()) {
                        if !r.params.contains_key(&i.name) {
                            bad.push(FieldError {
                                field: format!("params.{}", i.name),
                                reason: "the spell needs this input".into(),
                            });
                        }
                    }
                }
            }
        }
        Ok(bad)
    }

    /// A piece's parameters: the recipe's with `[[Category]]` filled, and
    /// the piece's seed in the tool's seed input unless the recipe fixes it.
    fn piece_params(&self, r: &Recipe, chosen: &[Chosen], seed: i64) -> Map<String, Value> {
        let mut params = recipe::fill(&r.params, chosen);
        if let Some(tool) = r.tool.as_deref().and_then(|t| self.tools.get(t))
            && let Some((name, _)) = tool.inputs.iter().find(|(_, i)| i.kind == InputType::Seed)
            && !params.contains_key(name.as_str())
        {
            params.insert(name.clone(), Value::from(seed));
        }
        params
    }

    /// The collection if `account` may review it: (collection, is owner).
    async fn reviewer_access(
        &self,
        account: &AccountRow,
        collection_id: &str,
    ) -> Result<(station_store::CollectionRow, bool), CollectionError> {
        let not_found = || CollectionError::NotFound { what: "collection", id: collection_id.into() };
        let c = self.store.get_collection(collection_id).await?.ok_or_else(not_found)?;
        if account.may_access(Some(&c.owner_id)) {
            return Ok((c, true));
        }
        let reviewers = match self.store.get_cook(&c.id).await? {
            Some(cook) => parse_stored(&cook.recipe)?.reviewers,
            None => self.stored_recipe(&c.id).await?.map(|r| r.reviewers).unwrap_or_default(),
        };
        if reviewers.contains(&account.id) { Ok((c, false)) } else { Err(not_found()) }
    }

    /// Starts cooking a collection `account` owns from its saved recipe:
    /// every piece drawn (from `seed`, or a random one) and written with
    /// the cook in one transaction; the workers submit them.
    pub async fn start_cook(
        &self,
        account: &AccountRow,
        collection_id: &str,
        seed: Option<i64>,
    ) -> Result<CookView, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let c = self.owned(account, collection_id).await?;
        let Some(r) = self.stored_recipe(&c.id).await? else {
            return Err(invalid("recipe", "this collection has no recipe yet; save one first"));
        };
        if let Some(s) = seed
            && !(0..=i64::from(u32::MAX)).contains(&s)
        {
            return Err(invalid("seed", format!("{s} is not a seed from 0 to {}", u32::MAX)));
        }
        if self.store.get_cook(&c.id).await?.is_some() {
            return Err(invalid("cook", "this collection is cooked already; pause, resume or stop that cook"));
        }
        // The tool (or its inputs) may have changed since the recipe was saved.
        let bad = self.check_recipe_maker(account, &r).await?;
        if !bad.is_empty() {
            return Err(CollectionError::Invalid(bad));
        }
        let seed = seed.unwrap_or_else(|| i64::from(rand::random::<u32>()));
        let now = now_ms();
        let drawer = Drawer::new(&r, seed as u64);
        let pieces: Vec<CookPieceRow> = (1..=r.supply)
            .map(|number| {
                let chosen = drawer.traits(number);
                let pseed = piece_seed(seed as u64, number, 0);
                let params = self.piece_params(&r, &chosen, pseed);
                CookPieceRow {
                    id: new_id(),
                    collection_id: c.id.clone(),
                    number,
                    attempt: 0,
                    seed: pseed,
                    traits: serde_json::to_string(&chosen).unwrap_or_default(),
                    params: Value::Object(params).to_string(),
                    status: "pending".into(),
                    job_id: None,
                    media_id: None,
                    error: None,
                    review: "unreviewed".into(),
                    reviewed_by: None,
                    claimed_by: None,
                    claim_expires_at: None,
                    kept: 1,
                    updated_at: now,
                }
            })
            .collect();
        let cook = CookRow {
            collection_id: c.id.clone(),
            account_id: account.id.clone(),
            status: "running".into(),
            seed,
            total: r.supply,
            recipe: r.to_json().to_string(),
            reason: None,
            lease_owner: None,
            lease_expires_at: None,
            created_at: now,
            updated_at: now,
        };
        if !self.store.start_cook(&cook, &pieces).await? {
            return Err(invalid("cook", "this collection is cooked already; pause, resume or stop that cook"));
        }
        info!(collection = %c.id, pieces = r.supply, seed, "cook started");
        self.cook_wake.notify_one();
        self.cook_status(account, &c.id).await?.ok_or_else(|| CollectionError::Io("the cook vanished".into()))
    }

    /// What cooking a collection's saved recipe would cost `account` (the
    /// owner): a tool recipe's price per piece is the tool's quote for the
    /// first piece, times the supply; a spell's pieces cost one cast each,
    /// priced step by step as they are queued. With the points `account`
    /// can spend now.
    pub async fn cook_quote(&self, account: &AccountRow, collection_id: &str) -> Result<CookQuote, CollectionError> {
        let c = self.owned(account, collection_id).await?;
        let Some(r) = self.stored_recipe(&c.id).await? else {
            return Err(invalid("recipe", "this collection has no recipe yet; save one first"));
        };
        let mut available = self.points(&account.id).await?.available();
        let per_piece = match &r.tool {
            Some(tool) => {
                let chosen = Drawer::new(&r, 0).traits(1);
                let req = SubmitRequest {
                    tool: tool.clone(),
                    params: self.piece_params(&r, &chosen, 1),
                    ..Default::default()
                };
                match self.quote(account, &req).await {
                    Ok(q) => {
                        // With today's free allowance (the quote gives a starting grant still due).
                        available = q.available;
                        Some(q.price)
                    }
                    Err(SubmitError::Storage(e)) => return Err(e.into()),
                    Err(SubmitError::Invalid(errs)) => return Err(CollectionError::Invalid(errs)),
                    // A quota or a suspension is said when the cook starts.
                    Err(_) => None,
                }
            }
            None => None,
        };
        let total = per_piece.map(|p| p.saturating_mul(r.supply));
        let text = match (per_piece, total) {
            (Some(p), Some(t)) => {
                let mut s = format!("{} pieces × {p} points = {t} points; you have {available} points", r.supply);
                if t > available {
                    s.push_str(" — the cook pauses when they run out");
                }
                s
            }
            _ => format!("{} pieces, each charged as one cast of the spell; you have {available} points", r.supply),
        };
        Ok(CookQuote { supply: r.supply, per_piece, total, available, text })
    }

    /// The cook of a collection `account` may review, if it has one.
    pub async fn cook_status(
        &self,
        account: &AccountRow,
        collection_id: &str,
    ) -> Result<Option<CookView>, CollectionError> {
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        let Some(cook) = self.store.get_cook(&c.id).await? else {
            return Ok(None);
        };
        let counts = self.store.cook_piece_counts(&c.id).await?;
        Ok(Some(cook_view(&cook, &counts)))
    }

    /// `account`'s cooked collections with where each cook stands, newest
    /// collection first.
    pub async fn cooks_of(
        &self,
        account: &AccountRow,
    ) -> Result<Vec<(crate::collections::CollectionSummary, CookView)>, CollectionError> {
        let mut out = vec![];
        for c in self.collections_of(account).await? {
            if let Some(cook) = self.store.get_cook(&c.collection.id).await? {
                let counts = self.store.cook_piece_counts(&cook.collection_id).await?;
                out.push((c, cook_view(&cook, &counts)));
            }
        }
        Ok(out)
    }

    /// Pauses, resumes, stops or re-cooks (`action`: `pause`, `resume`,
    /// `stop`, `recook`) the cook of a collection `account` owns. Stopping
    /// cancels the pieces' queued jobs (their points are released) and
    /// leaves the rest unmade; re-cooking makes what a stop (or a failure)
    /// left unmade.
    pub async fn control_cook(
        &self,
        account: &AccountRow,
        collection_id: &str,
        action: &str,
    ) -> Result<CookView, CollectionError> {
        let c = self.owned(account, collection_id).await?;
        let Some(cook) = self.store.get_cook(&c.id).await? else {
            return Err(invalid("cook", "this collection has no cook; start one"));
        };
        let now = now_ms();
        let (from, to): (&[&str], &str) = match action {
            "pause" => (&["running"], "paused"),
            "resume" => (&["paused"], "running"),
            "stop" => (&["running", "paused"], "stopped"),
            "recook" => return self.recook(account, &c.id, &cook).await,
            other => {
                return Err(invalid("action", format!("{other:?} is not one of pause, resume, stop, recook")));
            }
        };
        if !self.store.set_cook_status(&c.id, from, to, None, now).await? {
            return Err(invalid("action", format!("the cook is {}; it cannot {action}", cook.status)));
        }
        info!(collection = %c.id, %action, "cook {action}");
        if to == "stopped" {
            let owner = self.store.get_account(&cook.account_id).await?;
            for p in self.store.cook_pieces_in(&c.id, "submitted", i64::MAX).await? {
                let (Some(job), Some(owner)) = (&p.job_id, &owner) else { continue };
                let r = if self.is_spell_cook(&cook)? {
                    self.cancel_cast(owner, job).await.map(|_| ())
                } else {
                    self.cancel(owner, job).await.map(|_| ())
                };
                if let Err(e) = r {
                    warn!(job = %job, error = %e, "could not cancel a stopped cook's job");
                }
            }
        }
        self.cook_wake.notify_one();
        self.cook_status(account, &c.id).await?.ok_or_else(|| CollectionError::Io("the cook vanished".into()))
    }

    /// Re-cooks a stopped cook (or a finished one with failed pieces): the
    /// pieces it never made — stopped or failed — go back to be made, and
    /// the cook runs again. A piece never submitted keeps its draw (attempt,
    /// seed, parameters), so it comes out as the first cook would have
    /// made it; one whose job was cancelled or failed gets the next attempt
    /// (its seed from the cook seed, number and attempt, and a new
    /// idempotency key, so the old job is never taken for the new one).
    /// Made pieces and their reviews stay.
    async fn recook(
        &self,
        account: &AccountRow,
        collection_id: &str,
        cook: &CookRow,
    ) -> Result<CookView, CollectionError> {
        if cook.status != "stopped" && cook.status != "done" {
            return Err(invalid(
                "action",
                format!("the cook is {}; only a stopped or finished cook is cooked again", cook.status),
            ));
        }
        let r = parse_stored(&cook.recipe)?;
        let mut back = vec![];
        for p in self.store.cook_pieces(collection_id).await? {
            if p.status != "stopped" && p.status != "failed" {
                continue;
            }
            if p.status == "stopped" && p.job_id.is_none() {
                back.push((p.id.clone(), p.attempt, p.attempt, p.seed, p.params.clone()));
                continue;
            }
            let attempt = p.attempt + 1;
            let seed = piece_seed(cook.seed as u64, p.number, attempt);
            let chosen: Vec<Chosen> = serde_json::from_str(&p.traits).unwrap_or_default();
            let params = Value::Object(self.piece_params(&r, &chosen, seed)).to_string();
            back.push((p.id.clone(), p.attempt, attempt, seed, params));
        }
        if back.is_empty() {
            return Err(invalid("action", "every piece of this cook is made already; nothing to cook again"));
        }
        match self.store.recook(collection_id, &back, now_ms()).await? {
            Some(n) => info!(collection = %collection_id, pieces = n, "cook started again for its missing pieces"),
            None => return Err(invalid("action", "the cook changed meanwhile; look again")),
        }
        self.cook_wake.notify_one();
        self.cook_status(account, collection_id).await?.ok_or_else(|| CollectionError::Io("the cook vanished".into()))
    }

    fn is_spell_cook(&self, cook: &CookRow) -> Result<bool, CollectionError> {
        Ok(parse_stored(&cook.recipe)?.spell.is_some())
    }

    /// One pass over a cook by the process holding its lease: record the
    /// end of each submitted piece, then submit pending pieces up to
    /// `collections.max_in_flight`, and mark it done when nothing is left.
    pub async fn drive_cook(&self, collection_id: &str, owner: &str) -> Result<(), CollectionError> {
        let now = now_ms();
        // The driver's lease lasts as long as a worker's on a job.
        let lease = (self.config.queue.lease_seconds.max(1) as i64).saturating_mul(1000);
        if !self.store.lease_cook(collection_id, owner, now, now.saturating_add(lease)).await? {
            return Ok(());
        }
        let Some(cook) = self.store.get_cook(collection_id).await? else { return Ok(()) };
        let r = parse_stored(&cook.recipe)?;
        let mut in_flight = 0i64;
        for p in self.store.cook_pieces_in(collection_id, "submitted", i64::MAX).await? {
            let Some(job) = &p.job_id else { continue };
            let ended = if r.spell.is_some() {
                match self.cast_view_of(job).await? {
                    Some(c) if c.status == "succeeded" => Some(("succeeded", c.outputs.first().cloned(), None)),
                    Some(c) if c.status == "running" => None,
                    Some(c) if c.status == "cancelled" => Some(("cancelled", None, c.error)),
                    Some(c) => Some(("failed", None, c.error)),
                    None => Some(("failed", None, Some("its cast vanished".into()))),
                }
            } else {
                match self.store.get_job(job).await? {
                    Some(j) => match j.status() {
                        JobStatus::Succeeded => Some(("succeeded", j.output_ids().first().cloned(), None)),
                        JobStatus::Failed => Some(("failed", None, j.error.clone())),
                        JobStatus::Cancelled => Some(("cancelled", None, j.error.clone())),
                        _ => None,
                    },
                    None => Some(("failed", None, Some("its job vanished".into()))),
                }
            };
            match ended {
                None => in_flight += 1,
                Some((status, media, error)) => {
                    let (status, error) = match status {
                        "cancelled" if cook.status == "stopped" => ("stopped", None),
                        "cancelled" => ("failed", Some(error.unwrap_or_else(|| "cancelled".into()))),
                        s => (s, error),
                    };
                    if status == "succeeded" && media.is_none() {
                        self.store
                            .piece_finished(&p.id, p.attempt, "failed", None, Some("made no image"), now_ms())
                            .await?;
                    } else {
                        self.store
                            .piece_finished(&p.id, p.attempt, status, media.as_deref(), error.as_deref(), now_ms())
                            .await?;
                    }
                }
            }
        }
        if cook.status != "running" {
            return Ok(());
        }
        let room = (self.config.collections.max_in_flight.max(1) as i64).saturating_sub(in_flight);
        if room > 0 {
            let account = self.store.get_account(&cook.account_id).await?;
            let Some(account) = account else {
                self.store
                    .set_cook_status(collection_id, &["running"], "stopped", Some("its account is gone"), now_ms())
                    .await?;
                return Ok(());
            };
            for p in self.store.cook_pieces_in(collection_id, "pending", room).await? {
                match self.submit_piece(&account, &r, &p).await {
                    Ok(job) => {
                        self.store.piece_submitted(&p.id, p.attempt, &job, now_ms()).await?;
                    }
                    Err(PieceRefusal::Pause(reason)) => {
                        warn!(collection = %collection_id, %reason, "cook paused");
                        self.store
                            .set_cook_status(collection_id, &["running"], "paused", Some(&reason), now_ms())
                            .await?;
                        return Ok(());
                    }
                    Err(PieceRefusal::Later) => break,
                    Err(PieceRefusal::Piece(reason)) => {
                        self.store.piece_finished(&p.id, p.attempt, "failed", None, Some(&reason), now_ms()).await?;
                    }
                    Err(PieceRefusal::Storage(e)) => return Err(e),
                }
            }
        }
        let counts = self.store.cook_piece_counts(collection_id).await?;
        if counts.pending == 0
            && counts.submitted == 0
            && self.store.set_cook_status(collection_id, &["running"], "done", None, now_ms()).await?
        {
            info!(collection = %collection_id, made = counts.succeeded, failed = counts.failed, "cook done");
        }
        Ok(())
    }

    /// Submits one piece's job (or cast) with its idempotency key; the job
    /// (or cast) id.
    async fn submit_piece(&self, account: &AccountRow, r: &Recipe, p: &CookPieceRow) -> Result<String, PieceRefusal> {
        let key = format!("cook:{}:{}:{}", p.collection_id, p.number, p.attempt);
        let params: Map<String, Value> = serde_json::from_str(&p.params).unwrap_or_default();
        let result = if let Some(spell) = &r.spell {
            let req = CastRequest {
                spell: spell.clone(),
                inputs: params,
                confirmed: true,
                idempotency_key: Some(key),
                ..Default::default()
            };
            match self.cast(account, req).await {
                Ok(c) => return Ok(c.id),
                Err(CastError::Submit(e)) => Err(e),
                Err(e) => return Err(PieceRefusal::Pause(e.to_string())),
            }
        } else {
            let req = SubmitRequest {
                tool: r.tool.clone().unwrap_or_default(),
                params,
                confirmed: true,
                idempotency_key: Some(key),
                ..Default::default()
            };
            self.submit(account, req).await.map(|j| j.id)
        };
        result.map_err(|e| match e {
            SubmitError::Storage(e) => PieceRefusal::Storage(e.into()),
            SubmitError::Invalid(errs) => PieceRefusal::Piece(
                errs.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "),
            ),
            SubmitError::QuotaExceeded { .. } => PieceRefusal::Later,
            e @ (SubmitError::InsufficientPoints { .. } | SubmitError::Suspended | SubmitError::UnknownTool(_)) => {
                PieceRefusal::Pause(e.to_string())
            }
            e => PieceRefusal::Pause(e.to_string()),
        })
    }

    /// Pieces of a collection's cook `account` may review, by number.
    pub async fn cook_pieces(
        &self,
        account: &AccountRow,
        collection_id: &str,
    ) -> Result<Vec<PieceView>, CollectionError> {
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        Ok(self.store.cook_pieces(&c.id).await?.into_iter().map(PieceView::from).collect())
    }

    /// Claims up to `count` made, unreviewed pieces for `account` (the
    /// owner or a named reviewer) for five minutes; no other reviewer is
    /// given them meanwhile. Pieces it holds already come back too.
    pub async fn claim_pieces(
        &self,
        account: &AccountRow,
        collection_id: &str,
        count: i64,
    ) -> Result<Vec<PieceView>, CollectionError> {
        if !(1..=MAX_CLAIM).contains(&count) {
            return Err(invalid("count", format!("{count} is not a number of pieces from 1 to {MAX_CLAIM}")));
        }
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        let now = now_ms();
        let rows = self.store.claim_pieces(&c.id, &account.id, now, now + CLAIM_MS, count).await?;
        Ok(rows.into_iter().map(PieceView::from).collect())
    }

    /// A made piece's image — a JPEG thumbnail with its longest side
    /// `thumb`, or the original bytes — for the owner and the named
    /// reviewers (the image itself is the owner's media).
    pub async fn piece_image(
        &self,
        account: &AccountRow,
        collection_id: &str,
        piece_id: &str,
        thumb: Option<u32>,
    ) -> Result<(String, Vec<u8>), CollectionError> {
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        let not_found = || CollectionError::NotFound { what: "piece", id: piece_id.into() };
        let media = match self.store.cook_piece(piece_id).await? {
            Some(p) if p.collection_id == c.id => p.media_id.ok_or_else(not_found)?,
            _ => return Err(not_found()),
        };
        let io = |e: crate::MediaServiceError| CollectionError::Io(e.to_string());
        match thumb {
            Some(side) => Ok(("image/jpeg".into(), self.media.thumbnail(&media, None, side).await.map_err(io)?)),
            None => {
                let (row, bytes) = self.media.get(&media, None).await.map_err(io)?;
                Ok((row.mime, bytes))
            }
        }
    }

    /// The next piece for `account` to review, one at a time (chat cards):
    /// it is claimed for five minutes like any claim, so no other reviewer
    /// sees it meanwhile; `piece` is `None` when nothing made is left
    /// unreviewed. With where the cook and its review stand.
    pub async fn review_card(&self, account: &AccountRow, collection_id: &str) -> Result<ReviewCard, CollectionError> {
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        let Some(cook) = self.cook_status(account, &c.id).await? else {
            return Err(invalid("cook", "this collection has no cook; start one"));
        };
        let piece = self.claim_pieces(account, &c.id, 1).await?.into_iter().next();
        let mime = match piece.as_ref().and_then(|p| p.media_id.as_deref()) {
            Some(m) => self.media.row(m, None).await.ok().map(|r| r.mime),
            None => None,
        };
        let reviewed = cook.accepted + cook.rejected;
        let text = format!(
            "{reviewed} of {} made reviewed: {} accepted, {} rejected",
            cook.done, cook.accepted, cook.rejected
        );
        Ok(ReviewCard { collection_name: c.name, piece, mime, cook, review_text: text })
    }

    /// Accepts, rejects or regenerates a piece. A named reviewer must hold
    /// the piece's claim; the owner may decide any piece no other reviewer
    /// holds (and change a decision).
    pub async fn review_piece(
        &self,
        account: &AccountRow,
        collection_id: &str,
        piece_id: &str,
        decision: Decision,
    ) -> Result<PieceView, CollectionError> {
        let (c, is_owner) = self.reviewer_access(account, collection_id).await?;
        let piece = match self.store.cook_piece(piece_id).await? {
            Some(p) if p.collection_id == c.id => p,
            _ => return Err(CollectionError::NotFound { what: "piece", id: piece_id.into() }),
        };
        let now = now_ms();
        let held_by_me =
            piece.claimed_by.as_deref() == Some(&account.id) && piece.claim_expires_at.is_some_and(|t| t >= now);
        let held_by_other = piece.claimed_by.as_ref().is_some_and(|b| b != &account.id)
            && piece.claim_expires_at.is_some_and(|t| t >= now);
        if held_by_other {
            return Err(invalid("piece", "another reviewer holds this piece for a few minutes; claim others"));
        }
        if !is_owner && !held_by_me {
            return Err(invalid("piece", "claim this piece first (a claim lasts 5 minutes)"));
        }
        match decision {
            Decision::Accept | Decision::Reject => {
                if piece.status != "succeeded" {
                    return Err(invalid("piece", format!("is {}; only made pieces are reviewed", piece.status)));
                }
                let word = if decision == Decision::Accept { "accepted" } else { "rejected" };
                if !self.store.review_piece(&piece.id, word, &account.id, !is_owner, now).await? {
                    return Err(invalid("piece", "its claim ended or another reviewer took it; claim again"));
                }
            }
            Decision::Regenerate => {
                if piece.status != "succeeded" && piece.status != "failed" {
                    return Err(invalid(
                        "piece",
                        format!("is {}; only a made or failed piece is made again", piece.status),
                    ));
                }
                let Some(cook) = self.store.get_cook(&c.id).await? else {
                    return Err(invalid("cook", "this collection has no cook"));
                };
                if cook.status == "stopped" {
                    return Err(invalid("cook", "the cook was stopped; nothing is made any more"));
                }
                let r = parse_stored(&cook.recipe)?;
                let chosen: Vec<Chosen> = serde_json::from_str(&piece.traits).unwrap_or_default();
                let attempt = piece.attempt + 1;
                let seed = piece_seed(cook.seed as u64, piece.number, attempt);
                let params = Value::Object(self.piece_params(&r, &chosen, seed)).to_string();
                if !self.store.regenerate_piece(&piece.id, attempt, seed, &params, now).await? {
                    return Err(invalid("piece", "it changed meanwhile; look again"));
                }
                info!(collection = %c.id, piece = piece.number, attempt, "piece sent back to be made again");
                self.cook_wake.notify_one();
            }
        }
        let p = self
            .store
            .cook_piece(&piece.id)
            .await?
            .ok_or_else(|| CollectionError::NotFound { what: "piece", id: piece_id.into() })?;
        Ok(p.into())
    }

    /// Culls the accepted pieces of a collection `account` owns down to
    /// `target`: a sample drawn from the cook seed is kept (so trait
    /// frequencies stay as they were, on average), the rest excluded. A
    /// target at or above the accepted count keeps them all.
    pub async fn cull_cook(
        &self,
        account: &AccountRow,
        collection_id: &str,
        target: i64,
    ) -> Result<CookView, CollectionError> {
        let c = self.owned(account, collection_id).await?;
        let Some(cook) = self.store.get_cook(&c.id).await? else {
            return Err(invalid("cook", "this collection has no cook"));
        };
        if target < 1 {
            return Err(invalid("target", format!("{target} is not a number of pieces (at least 1)")));
        }
        let accepted: Vec<CookPieceRow> = self
            .store
            .cook_pieces(&c.id)
            .await?
            .into_iter()
            .filter(|p| p.status == "succeeded" && p.review == "accepted")
            .collect();
        if accepted.is_empty() {
            return Err(invalid("target", "no piece is accepted yet; review some first"));
        }
        let mut order: Vec<usize> = (0..accepted.len()).collect();
        let mut rng = recipe::SplitMix64::new(recipe::mix(cook.seed as u64 ^ 0xC011));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let keep: Vec<String> = order.into_iter().take(target as usize).map(|i| accepted[i].id.clone()).collect();
        self.store.cull_pieces(&c.id, &keep, now_ms()).await?;
        info!(collection = %c.id, kept = keep.len(), accepted = accepted.len(), "cook culled");
        self.cook_status(account, &c.id).await?.ok_or_else(|| CollectionError::Io("the cook vanished".into()))
    }

    /// Keeps or excludes one accepted piece of a collection `account` owns.
    pub async fn keep_piece(
        &self,
        account: &AccountRow,
        collection_id: &str,
        piece_id: &str,
        keep: bool,
    ) -> Result<PieceView, CollectionError> {
        let c = self.owned(account, collection_id).await?;
        let not_found = || CollectionError::NotFound { what: "piece", id: piece_id.into() };
        match self.store.cook_piece(piece_id).await? {
            Some(p) if p.collection_id == c.id => {}
            _ => return Err(not_found()),
        }
        if !self.store.keep_piece(piece_id, keep, now_ms()).await? {
            return Err(invalid("piece", "only an accepted piece is kept or excluded"));
        }
        Ok(self.store.cook_piece(piece_id).await?.ok_or_else(not_found)?.into())
    }

    /// How often each weighted trait occurs against its weight: among every
    /// piece made, or (`kept_only`) the accepted pieces the cull keeps.
    pub async fn trait_stats(
        &self,
        account: &AccountRow,
        collection_id: &str,
        kept_only: bool,
    ) -> Result<TraitStats, CollectionError> {
        let (c, _) = self.reviewer_access(account, collection_id).await?;
        let Some(cook) = self.store.get_cook(&c.id).await? else {
            return Err(invalid("cook", "this collection has no cook"));
        };
        let r = parse_stored(&cook.recipe)?;
        let pieces: Vec<Vec<Chosen>> = self
            .store
            .cook_pieces(&c.id)
            .await?
            .into_iter()
            .filter(|p| p.status == "succeeded" && (!kept_only || (p.review == "accepted" && p.kept == 1)))
            .map(|p| serde_json::from_str(&p.traits).unwrap_or_default())
            .collect();
        let n = pieces.len() as i64;
        let mut out = vec![];
        for cat in &r.categories {
            let recipe::CategoryKind::Traits { traits } = &cat.kind else { continue };
            let total: f64 = traits.iter().map(|t| t.weight).sum();
            for t in traits {
                let occurrences = pieces
                    .iter()
                    .filter(|chosen| chosen.iter().any(|x| x.category == cat.name && x.name == t.name))
                    .count() as i64;
                out.push(TraitStat {
                    category: cat.name.clone(),
                    name: t.name.clone(),
                    weight: t.weight,
                    expected: t.weight / total,
                    occurrences,
                    share: if n == 0 { 0.0 } else { occurrences as f64 / n as f64 },
                });
            }
        }
        Ok(TraitStats { scope: if kept_only { "kept" } else { "made" }.into(), pieces: n, traits: out })
    }
}

/// Why a piece could not be submitted now.
enum PieceRefusal {
    /// The whole cook must wait for a person: pause it with this reason.
    Pause(String),
    /// A limit that passes (queued jobs): try again on a later pass.
    Later,
    /// This piece's parameters are refused: it fails with the reason.
    Piece(String),
    /// The database failed.
    Storage(CollectionError),
}

/// A stored recipe, parsed without the supply limit (which applies when
/// it is saved, not to cooks already drawn).
fn parse_stored(text: &str) -> Result<Recipe, CollectionError> {
    let v: Value = serde_json::from_str(text).map_err(|e| CollectionError::Io(format!("stored recipe: {e}")))?;
    Recipe::parse(&v, u64::MAX).map_err(CollectionError::Invalid)
}

/// Drives every active cook whose lease this process can take: on every
/// terminal job event, when woken (a cook started, resumed, a piece sent
/// back) and every poll interval. Started by [`crate::Workers::start`].
pub(crate) async fn cook_loop(station: Station, owner: Arc<str>, stop: CancellationToken) {
    let mut events = station.bus.subscribe();
    let poll = Duration::from_millis(station.config.queue.poll_ms.clamp(50, 2000));
    loop {
        if stop.is_cancelled() {
            return;
        }
        match station.store.active_cooks().await {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = station.drive_cook(&id, &owner).await {
                        warn!(collection = %id, error = %e, "could not drive the cook; will retry");
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not list cooks"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = station.cook_wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            e = events.recv() => match e {
                Ok(JobEvent::Status { status, .. }) if status.is_terminal() => {}
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Not an end: wait out the poll, or a wake.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = station.cook_wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => tokio::time::sleep(poll).await,
            },
        }
    }
}
