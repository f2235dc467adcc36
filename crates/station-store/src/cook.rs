//! Cook (issue 24, items 4–7): a collection's recipe, its cook and its
//! pieces. The core draws every piece (traits, parameters, seed) and
//! decides what may happen; these statements write it atomically: all
//! pieces with the cook in one transaction, a piece's job recorded only
//! while it is still pending at that attempt, review claims that two
//! reviewers can never both take.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// A collection's cook.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CookRow {
    /// The collection (one cook each).
    pub collection_id: String,
    /// The cooking account: its jobs, its points, its fair key.
    pub account_id: String,
    /// `running`, `paused`, `stopped` or `done`.
    pub status: String,
    /// The cook seed every piece's seed derives from.
    pub seed: i64,
    /// Pieces to make.
    pub total: i64,
    /// The recipe the pieces were drawn from (JSON).
    pub recipe: String,
    /// Why it paused or stopped by itself (not enough points, …).
    pub reason: Option<String>,
    /// Process driving it.
    pub lease_owner: Option<String>,
    /// Its lease lapses then.
    pub lease_expires_at: Option<i64>,
    /// Started (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

/// One piece of a cook.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CookPieceRow {
    /// Piece id.
    pub id: String,
    /// The collection.
    pub collection_id: String,
    /// 1-based number.
    pub number: i64,
    /// 0, then one more per regeneration.
    pub attempt: i64,
    /// The piece's seed (from the cook seed, number and attempt).
    pub seed: i64,
    /// Selected traits (JSON array of `{category, name, value}`).
    pub traits: String,
    /// The parameters its job is submitted with (JSON object).
    pub params: String,
    /// `pending`, `submitted`, `succeeded`, `failed`, `stopped`.
    pub status: String,
    /// Its job, once submitted.
    pub job_id: Option<String>,
    /// Its image, once succeeded.
    pub media_id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// `unreviewed`, `accepted`, `rejected`.
    pub review: String,
    /// Who decided.
    pub reviewed_by: Option<String>,
    /// The reviewer holding it.
    pub claimed_by: Option<String>,
    /// Until then.
    pub claim_expires_at: Option<i64>,
    /// 1 unless culled.
    pub kept: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

/// How many pieces of a cook are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PieceCounts {
    /// Not yet submitted.
    pub pending: i64,
    /// Job queued or running.
    pub submitted: i64,
    /// Image made.
    pub succeeded: i64,
    /// Job failed.
    pub failed: i64,
    /// Never made: the cook was stopped.
    pub stopped: i64,
    /// Succeeded and accepted.
    pub accepted: i64,
    /// Succeeded and rejected.
    pub rejected: i64,
    /// Accepted and kept by the cull.
    pub kept: i64,
}

const COOK_COLUMNS: &str = "collection_id, account_id, status, seed, total, recipe, reason, lease_owner, lease_expires_at, created_at, updated_at";
const PIECE_COLUMNS: &str = "id, collection_id, number, attempt, seed, traits, params, status, job_id, media_id, \
     error, review, reviewed_by, claimed_by, claim_expires_at, kept, updated_at";

fn sql(s: String) -> sqlx::AssertSqlSafe<String> {
    crate::db::safe(&s)
}

impl Store {
    /// Saves a collection's recipe (JSON), replacing the one before.
    pub async fn put_cook_recipe(
        &self,
        collection_id: &str,
        recipe: &str,
        by: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO cook_recipes (collection_id, recipe, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (collection_id) DO UPDATE SET recipe = $2, updated_by = $3, updated_at = $4",
            )
            .bind(collection_id).bind(recipe).bind(by).bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// A collection's recipe (JSON), if it has one.
    pub async fn cook_recipe(&self, collection_id: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let r: Option<(String,)> = sqlx::query_as("SELECT recipe FROM cook_recipes WHERE collection_id = $1")
                .bind(collection_id).fetch_optional(p).await?;
            Ok(r.map(|(r,)| r))
        })
    }

    /// Writes a cook and all its pieces in one transaction; false (nothing
    /// written) if the collection has a cook already.
    pub async fn start_cook(&self, cook: &CookRow, pieces: &[CookPieceRow]) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(
                "INSERT INTO cooks (collection_id, account_id, status, seed, total, recipe, reason, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (collection_id) DO NOTHING",
            )
            .bind(&cook.collection_id).bind(&cook.account_id).bind(&cook.status).bind(cook.seed).bind(cook.total)
            .bind(&cook.recipe).bind(&cook.reason).bind(cook.created_at).bind(cook.updated_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            for pc in pieces {
                sqlx::query(
                    "INSERT INTO cook_pieces (id, collection_id, number, attempt, seed, traits, params, status, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&pc.id).bind(&pc.collection_id).bind(pc.number).bind(pc.attempt).bind(pc.seed)
                .bind(&pc.traits).bind(&pc.params).bind(&pc.status).bind(pc.updated_at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A collection's cook.
    pub async fn get_cook(&self, collection_id: &str) -> Result<Option<CookRow>, StoreError> {
        let q = sql(format!("SELECT {COOK_COLUMNS} FROM cooks WHERE collection_id = $1"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(collection_id).fetch_optional(p).await?))
    }

    /// Moves a cook from one of `from` to `to` with `reason`; when `to` is
    /// `stopped`, its pending pieces become `stopped` in the same
    /// transaction. False if it was in none of `from`.
    pub async fn set_cook_status(
        &self,
        collection_id: &str,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let marks: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 5)).collect();
        let q = sql(format!(
            "UPDATE cooks SET status = $2, reason = $3, updated_at = $4 WHERE collection_id = $1 AND status IN ({})",
            marks.join(", ")
        ));
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut query = sqlx::query(q).bind(collection_id).bind(to).bind(reason).bind(now);
            for f in from {
                query = query.bind(*f);
            }
            let n = query.execute(&mut *tx).await?.rows_affected();
            if n == 1 && to == "stopped" {
                sqlx::query(
                    "UPDATE cook_pieces SET status = 'stopped', updated_at = $2 WHERE collection_id = $1 AND status = 'pending'",
                )
                .bind(collection_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Cooks that need driving: running ones, and any with a piece whose
    /// job is still out.
    pub async fn active_cooks(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT collection_id FROM cooks WHERE status = 'running' OR EXISTS (SELECT 1 FROM cook_pieces \
                 WHERE cook_pieces.collection_id = cooks.collection_id AND cook_pieces.status = 'submitted') \
                 ORDER BY created_at LIMIT 100",
            )
            .fetch_all(p).await?;
            Ok(rows.into_iter().map(|(r,)| r).collect())
        })
    }

    /// Takes or renews the lease on driving a cook; true if `owner` holds
    /// it until `until`.
    pub async fn lease_cook(&self, collection_id: &str, owner: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE cooks SET lease_owner = $2, lease_expires_at = $3 WHERE collection_id = $1 AND \
                 (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < $4)",
            )
            .bind(collection_id).bind(owner).bind(until).bind(now)
            .execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Pieces of a cook in `status`, by number, at most `limit`.
    pub async fn cook_pieces_in(
        &self,
        collection_id: &str,
        status: &str,
        limit: i64,
    ) -> Result<Vec<CookPieceRow>, StoreError> {
        let q = sql(format!(
            "SELECT {PIECE_COLUMNS} FROM cook_pieces WHERE collection_id = $1 AND status = $2 ORDER BY number LIMIT $3"
        ));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(collection_id).bind(status).bind(limit).fetch_all(p).await?))
    }

    /// Every piece of a cook, by number.
    pub async fn cook_pieces(&self, collection_id: &str) -> Result<Vec<CookPieceRow>, StoreError> {
        let q = sql(format!("SELECT {PIECE_COLUMNS} FROM cook_pieces WHERE collection_id = $1 ORDER BY number"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(collection_id).fetch_all(p).await?))
    }

    /// One piece by id.
    pub async fn cook_piece(&self, id: &str) -> Result<Option<CookPieceRow>, StoreError> {
        let q = sql(format!("SELECT {PIECE_COLUMNS} FROM cook_pieces WHERE id = $1"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(id).fetch_optional(p).await?))
    }

    /// Records a piece's job, only while the piece is still pending at
    /// `attempt`; false if another process (or an earlier life) did.
    pub async fn piece_submitted(&self, id: &str, attempt: i64, job_id: &str, now: i64) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE cook_pieces SET status = 'submitted', job_id = $3, updated_at = $4 \
                 WHERE id = $1 AND attempt = $2 AND status = 'pending'",
            )
            .bind(id).bind(attempt).bind(job_id).bind(now)
            .execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends a piece (`succeeded` with its image, `failed` or `stopped` with
    /// why), only while it is still submitted, or pending (a submission
    /// refused), at `attempt`.
    pub async fn piece_finished(
        &self,
        id: &str,
        attempt: i64,
        status: &str,
        media_id: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE cook_pieces SET status = $3, media_id = $4, error = $5, updated_at = $6 \
                 WHERE id = $1 AND attempt = $2 AND status IN ('submitted', 'pending')",
            )
            .bind(id).bind(attempt).bind(status).bind(media_id).bind(error).bind(now)
            .execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// How many pieces of a cook are in each state.
    pub async fn cook_piece_counts(&self, collection_id: &str) -> Result<PieceCounts, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = with_pool!(self, p => {
            sqlx::query_as(
                "SELECT status, review, kept, COUNT(*) FROM cook_pieces WHERE collection_id = $1 \
                 GROUP BY status, review, kept",
            )
            .bind(collection_id).fetch_all(p).await?
        });
        let mut c = PieceCounts::default();
        for (status, review, kept, n) in rows {
            match status.as_str() {
                "pending" => c.pending += n,
                "submitted" => c.submitted += n,
                "succeeded" => c.succeeded += n,
                "failed" => c.failed += n,
                _ => c.stopped += n,
            }
            if status == "succeeded" {
                match review.as_str() {
                    "accepted" => {
                        c.accepted += n;
                        if kept == 1 {
                            c.kept += n;
                        }
                    }
                    "rejected" => c.rejected += n,
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// Claims up to `limit` succeeded, unreviewed pieces for `reviewer`
    /// until `until`: ones nobody holds (or whose claim lapsed) and the
    /// reviewer's own. The claim conditions are checked again on each row
    /// as it is written, so of two reviewers racing for a piece one gets it.
    pub async fn claim_pieces(
        &self,
        collection_id: &str,
        reviewer: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<CookPieceRow>, StoreError> {
        const FREE: &str = "status = 'succeeded' AND review = 'unreviewed' AND \
             (claimed_by IS NULL OR claimed_by = $2 OR claim_expires_at < $3)";
        let q = || {
            sql(format!(
                "UPDATE cook_pieces SET claimed_by = $2, claim_expires_at = $4 WHERE id IN \
                 (SELECT id FROM cook_pieces WHERE collection_id = $1 AND {FREE} ORDER BY number LIMIT $5) \
                 AND collection_id = $1 AND {FREE} RETURNING {PIECE_COLUMNS}"
            ))
        };
        // Two reviewers claiming at once on PostgreSQL: the second statement
        // waits for the first's rows, finds them taken and claims none; asked
        // again, it sees them taken and picks the next free ones.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut rows: Vec<CookPieceRow> = with_pool!(self, p => {
                sqlx::query_as(q())
                    .bind(collection_id).bind(reviewer).bind(now).bind(until).bind(limit)
                    .fetch_all(p).await?
            });
            if rows.is_empty() && attempts < 3 {
                continue;
            }
            rows.sort_by_key(|r| r.number);
            return Ok(rows);
        }
    }

    /// Records a review decision (`accepted` or `rejected`) on a succeeded
    /// piece. With `claimer`, only while that reviewer's claim lives; without
    /// (the owner), unless another reviewer's live claim holds it. The claim
    /// is released. False if not written.
    pub async fn review_piece(
        &self,
        id: &str,
        decision: &str,
        reviewer: &str,
        claimer: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let cond = if claimer {
            "claimed_by = $3 AND claim_expires_at >= $4"
        } else {
            "(claimed_by IS NULL OR claimed_by = $3 OR claim_expires_at < $4)"
        };
        let q = sql(format!(
            "UPDATE cook_pieces SET review = $2, reviewed_by = $3, claimed_by = NULL, claim_expires_at = NULL, \
             kept = 1, updated_at = $4 WHERE id = $1 AND status = 'succeeded' AND {cond}"
        ));
        let n = with_pool!(self, p => {
            sqlx::query(q).bind(id).bind(decision).bind(reviewer).bind(now).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Sends a piece back to be made again at `attempt` with `seed` and
    /// `params` (traits unchanged), unreviewed and unclaimed, and sets its
    /// cook running again if it had finished — in one transaction, only
    /// while the piece is still at `attempt - 1` and not in flight.
    pub async fn regenerate_piece(
        &self,
        id: &str,
        attempt: i64,
        seed: i64,
        params: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let r: Option<(String,)> = sqlx::query_as(
                "UPDATE cook_pieces SET attempt = $2, seed = $3, params = $4, status = 'pending', job_id = NULL, \
                 media_id = NULL, error = NULL, review = 'unreviewed', reviewed_by = NULL, claimed_by = NULL, \
                 claim_expires_at = NULL, kept = 1, updated_at = $5 \
                 WHERE id = $1 AND attempt = $2 - 1 AND status IN ('succeeded', 'failed') RETURNING collection_id",
            )
            .bind(id).bind(attempt).bind(seed).bind(params).bind(now)
            .fetch_optional(&mut *tx).await?;
            let Some((collection,)) = r else {
                return Ok(false);
            };
            sqlx::query(
                "UPDATE cooks SET status = 'running', reason = NULL, updated_at = $2 WHERE collection_id = $1 AND status = 'done'",
            )
            .bind(&collection).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Re-cooks a stopped or finished cook: sets it running again and puts
    /// each listed piece (`id`, the attempt it is at, the attempt, seed and
    /// parameters it is made with now) back to pending — only while it is
    /// still `stopped` or `failed` at that attempt — in one transaction.
    /// The number of pieces sent back; `None` (nothing written) when the
    /// cook is neither stopped nor done.
    pub async fn recook(
        &self,
        collection_id: &str,
        pieces: &[(String, i64, i64, i64, String)],
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(
                "UPDATE cooks SET status = 'running', reason = NULL, updated_at = $2 \
                 WHERE collection_id = $1 AND status IN ('stopped', 'done')",
            )
            .bind(collection_id).bind(now).execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Ok(None);
            }
            let mut back = 0;
            for (id, was, attempt, seed, params) in pieces {
                back += sqlx::query(
                    "UPDATE cook_pieces SET attempt = $3, seed = $4, params = $5, status = 'pending', job_id = NULL, \
                     media_id = NULL, error = NULL, review = 'unreviewed', reviewed_by = NULL, claimed_by = NULL, \
                     claim_expires_at = NULL, kept = 1, updated_at = $6 \
                     WHERE id = $1 AND collection_id = $7 AND attempt = $2 AND status IN ('stopped', 'failed')",
                )
                .bind(id).bind(was).bind(attempt).bind(seed).bind(params).bind(now).bind(collection_id)
                .execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(Some(back))
        })
    }

    /// Sets which accepted pieces are kept: those in `keep` kept, every
    /// other accepted piece excluded, in one transaction.
    pub async fn cull_pieces(&self, collection_id: &str, keep: &[String], now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE cook_pieces SET kept = 0, updated_at = $2 WHERE collection_id = $1 AND review = 'accepted'")
                .bind(collection_id).bind(now).execute(&mut *tx).await?;
            for id in keep {
                sqlx::query("UPDATE cook_pieces SET kept = 1 WHERE collection_id = $1 AND id = $2")
                    .bind(collection_id).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Keeps or excludes one accepted piece; false if it is not accepted.
    pub async fn keep_piece(&self, id: &str, keep: bool, now: i64) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query("UPDATE cook_pieces SET kept = $2, updated_at = $3 WHERE id = $1 AND review = 'accepted'")
                .bind(id).bind(i64::from(keep)).bind(now).execute(p).await?.rows_affected()
        });
        Ok(n == 1)
    }
}
