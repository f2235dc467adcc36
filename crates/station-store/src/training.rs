//! LoRA training: datasets with their images and captions, and trainings
//! (each one job; its outcome turns into a catalog LoRA through the core).

use crate::db::BeginWrite as _;
use crate::db::{Store, StoreError, safe, with_pool};

/// One dataset.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DatasetRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Name as given.
    pub name: String,
    /// Slug of the name, unique per owner; also the trained LoRA's slug stem.
    pub slug: String,
    /// Trigger word the captions carry.
    pub trigger_word: String,
    /// `draft`, `ready`, `locked` (while training) or `archived`.
    pub status: String,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DatasetImageRow {
    /// The dataset.
    pub dataset_id: String,
    /// Slot, from 1.
    pub position: i64,
    /// The stored image.
    pub media_id: String,
    /// Its content hash (duplicates are refused).
    pub hash: String,
    /// Its caption.
    pub caption: String,
}

/// What adding an image to a dataset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddedImage {
    /// Stored in this slot.
    Added(i64),
    /// The dataset already holds an image with this hash, in this slot.
    Duplicate(i64),
    /// Every slot is taken.
    Full,
    /// The dataset does not exist or is not editable (locked or archived).
    NotEditable,
}

/// One training.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct TrainingRow {
    /// Id.
    pub id: String,
    /// Owner (who pays).
    pub account_id: String,
    /// The dataset trained.
    pub dataset_id: String,
    /// The training definition's id.
    pub definition: String,
    /// The job that runs it.
    pub job_id: String,
    /// Slug the resulting LoRA gets.
    pub lora_slug: String,
    /// The settings used, as JSON text.
    pub settings: String,
    /// Points quoted and held.
    pub price: i64,
    /// `running` until its job ends, then `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Content hash of the trained file, once stored.
    pub file_hash: Option<String>,
    /// The trained file's name on the backend that saved it.
    pub file_name: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Ended, Unix ms.
    pub finished_at: Option<i64>,
}

/// A succeeded training's settings and measured backend time.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrainingRun {
    /// Its settings (JSON), which hold its `steps`.
    pub settings: String,
    /// Milliseconds its job ran on its backend.
    pub run_ms: i64,
}

/// One caption job of a dataset image (auto-captions).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DatasetCaptionRow {
    /// The caption job.
    pub job_id: String,
    /// The captioning run it belongs to (one request for a dataset).
    pub run_id: String,
    /// The dataset.
    pub dataset_id: String,
    /// Owner (who pays).
    pub account_id: String,
    /// The image captioned.
    pub media_id: String,
    /// Replace a caption someone wrote (else only an empty one is filled).
    pub overwrite: bool,
    /// `pending` until its job ends, then `applied`, `kept` (the caption was
    /// not empty, or was edited meanwhile), `failed` or `cancelled`.
    pub status: String,
    /// The caption the tool wrote.
    pub caption: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Ended, Unix ms.
    pub finished_at: Option<i64>,
}

const CAPTION_COLS: &str =
    "job_id, run_id, dataset_id, account_id, media_id, overwrite, status, caption, error, created_at, finished_at";

const DATASET_COLS: &str = "id, account_id, name, slug, trigger_word, status, created_at, updated_at";
const TRAINING_COLS: &str = "id, account_id, dataset_id, definition, job_id, lora_slug, settings, price, status, \
                             error, file_hash, file_name, created_at, finished_at";

impl Store {
    /// Creates a dataset; false when the owner already has one with this slug.
    pub async fn insert_dataset(&self, row: &DatasetRow) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO datasets (id, account_id, name, slug, trigger_word, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, slug) DO NOTHING",
            )
            .bind(&row.id)
            .bind(&row.account_id)
            .bind(&row.name)
            .bind(&row.slug)
            .bind(&row.trigger_word)
            .bind(&row.status)
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// A dataset by id.
    pub async fn get_dataset(&self, id: &str) -> Result<Option<DatasetRow>, StoreError> {
        let sql = format!("SELECT {DATASET_COLS} FROM datasets WHERE id = $1");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(id).fetch_optional(p).await?))
    }

    /// An owner's dataset by slug.
    pub async fn dataset_by_slug(&self, account_id: &str, slug: &str) -> Result<Option<DatasetRow>, StoreError> {
        let sql = format!("SELECT {DATASET_COLS} FROM datasets WHERE account_id = $1 AND slug = $2");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(account_id).bind(slug).fetch_optional(p).await?))
    }

    /// An owner's datasets, newest first (archived ones too).
    pub async fn list_datasets(&self, account_id: &str) -> Result<Vec<DatasetRow>, StoreError> {
        let sql = format!("SELECT {DATASET_COLS} FROM datasets WHERE account_id = $1 ORDER BY created_at DESC, id");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(account_id).fetch_all(p).await?))
    }

    /// A dataset's images in slot order.
    pub async fn dataset_images(&self, dataset_id: &str) -> Result<Vec<DatasetImageRow>, StoreError> {
        Ok(with_pool!(self, p => {
            sqlx::query_as(
                "SELECT dataset_id, position, media_id, hash, caption FROM dataset_images \
                 WHERE dataset_id = $1 ORDER BY position",
            )
            .bind(dataset_id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Adds an image into the next free slot of an editable dataset (one
    /// transaction: the duplicate and slot checks see the rows they guard).
    /// `limits` is (most images, images that make the dataset `ready`).
    pub async fn add_dataset_image(
        &self,
        dataset_id: &str,
        (media_id, hash, caption): (&str, &str, &str),
        (max_images, ready_at): (i64, i64),
        now: i64,
    ) -> Result<AddedImage, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // Taking the row first serialises writers of one dataset on both engines.
            let status: Option<(String,)> = sqlx::query_as(
                "UPDATE datasets SET updated_at = $2 WHERE id = $1 AND status IN ('draft', 'ready') RETURNING status",
            )
            .bind(dataset_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if status.is_none() {
                return Ok(AddedImage::NotEditable);
            }
            let dup: Option<(i64,)> =
                sqlx::query_as("SELECT position FROM dataset_images WHERE dataset_id = $1 AND hash = $2")
                    .bind(dataset_id)
                    .bind(hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((pos,)) = dup {
                return Ok(AddedImage::Duplicate(pos));
            }
            let (count, last): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), MAX(position) FROM dataset_images WHERE dataset_id = $1")
                    .bind(dataset_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= max_images {
                return Ok(AddedImage::Full);
            }
            let position = last.unwrap_or(0) + 1;
            sqlx::query(
                "INSERT INTO dataset_images (dataset_id, position, media_id, hash, caption) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(dataset_id)
            .bind(position)
            .bind(media_id)
            .bind(hash)
            .bind(caption)
            .execute(&mut *tx)
            .await?;
            let status = if count + 1 >= ready_at { "ready" } else { "draft" };
            sqlx::query("UPDATE datasets SET status = $2 WHERE id = $1").bind(dataset_id).bind(status).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(AddedImage::Added(position))
        })
    }

    /// Sets one image's caption in an editable dataset; false when there is
    /// no such slot or the dataset is locked or archived.
    pub async fn set_dataset_caption(
        &self,
        dataset_id: &str,
        position: i64,
        caption: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE dataset_images SET caption = $3 WHERE dataset_id = $1 AND position = $2 \
                 AND EXISTS (SELECT 1 FROM datasets d WHERE d.id = $1 AND d.status IN ('draft', 'ready'))",
            )
            .bind(dataset_id)
            .bind(position)
            .bind(caption)
            .execute(p)
            .await?
            .rows_affected()
        });
        if n == 1 {
            with_pool!(self, p => {
                sqlx::query("UPDATE datasets SET updated_at = $2 WHERE id = $1").bind(dataset_id).bind(now).execute(p).await?;
            });
        }
        Ok(n == 1)
    }

    /// Archives a dataset that is not being trained; false otherwise.
    pub async fn archive_dataset(&self, dataset_id: &str, now: i64) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query("UPDATE datasets SET status = 'archived', updated_at = $2 WHERE id = $1 AND status <> 'locked'")
                .bind(dataset_id)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Records a training and locks its dataset (one transaction; refused,
    /// writing nothing, unless the dataset is `ready`).
    pub async fn insert_training(&self, row: &TrainingRow) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let locked = sqlx::query(
                "UPDATE datasets SET status = 'locked', updated_at = $2 WHERE id = $1 AND status = 'ready'",
            )
            .bind(&row.dataset_id)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if locked != 1 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO trainings (id, account_id, dataset_id, definition, job_id, lora_slug, settings, price, \
                 status, error, file_hash, file_name, created_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&row.id)
            .bind(&row.account_id)
            .bind(&row.dataset_id)
            .bind(&row.definition)
            .bind(&row.job_id)
            .bind(&row.lora_slug)
            .bind(&row.settings)
            .bind(row.price)
            .bind(&row.status)
            .bind(&row.error)
            .bind(&row.file_hash)
            .bind(&row.file_name)
            .bind(row.created_at)
            .bind(row.finished_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A training by id.
    pub async fn get_training(&self, id: &str) -> Result<Option<TrainingRow>, StoreError> {
        let sql = format!("SELECT {TRAINING_COLS} FROM trainings WHERE id = $1");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(id).fetch_optional(p).await?))
    }

    /// The training a job runs, if it runs one.
    pub async fn training_by_job(&self, job_id: &str) -> Result<Option<TrainingRow>, StoreError> {
        let sql = format!("SELECT {TRAINING_COLS} FROM trainings WHERE job_id = $1");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(job_id).fetch_optional(p).await?))
    }

    /// The training that made the LoRA with this slug.
    pub async fn training_by_lora(&self, slug: &str) -> Result<Option<TrainingRow>, StoreError> {
        let sql = format!("SELECT {TRAINING_COLS} FROM trainings WHERE lora_slug = $1 AND status = 'succeeded'");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(slug).fetch_optional(p).await?))
    }

    /// The latest `limit` succeeded trainings of `definition`, newest first,
    /// each with its job's measured backend time (from its start, else its
    /// dispatch, to its end — what a per-second capture charges for).
    pub async fn training_runs(&self, definition: &str, limit: i64) -> Result<Vec<TrainingRun>, StoreError> {
        let sql = "SELECT t.settings, j.finished_at - COALESCE(j.started_at, j.dispatched_at) AS run_ms \
                   FROM trainings t JOIN jobs j ON j.id = t.job_id \
                   WHERE t.definition = $1 AND t.status = 'succeeded' AND j.finished_at IS NOT NULL \
                   AND COALESCE(j.started_at, j.dispatched_at) IS NOT NULL \
                   ORDER BY t.finished_at DESC, t.id LIMIT $2";
        Ok(with_pool!(self, p => sqlx::query_as(sql).bind(definition).bind(limit).fetch_all(p).await?))
    }

    /// An owner's trainings, newest first.
    pub async fn list_trainings(&self, account_id: &str) -> Result<Vec<TrainingRow>, StoreError> {
        let sql = format!("SELECT {TRAINING_COLS} FROM trainings WHERE account_id = $1 ORDER BY created_at DESC, id");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(account_id).fetch_all(p).await?))
    }

    /// Trainings whose job ended but which were not completed yet (a process
    /// died in between), and those created before `orphaned_before` whose job
    /// was never queued (a process died between the two inserts): the core
    /// completes them.
    pub async fn trainings_to_complete(&self, orphaned_before: i64) -> Result<Vec<TrainingRow>, StoreError> {
        let sql = format!(
            "SELECT {TRAINING_COLS} FROM trainings t WHERE t.status = 'running' AND (EXISTS \
             (SELECT 1 FROM jobs j WHERE j.id = t.job_id AND j.status IN ('succeeded', 'failed', 'cancelled')) \
             OR (t.created_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id)))"
        );
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(orphaned_before).fetch_all(p).await?))
    }

    /// Records a training's end and unlocks its dataset (`ready` again), once:
    /// false when it had ended already.
    pub async fn finish_training(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        file_hash: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let dataset: Option<(String,)> = sqlx::query_as(
                "UPDATE trainings SET status = $2, error = $3, file_hash = $4, finished_at = $5 \
                 WHERE id = $1 AND status = 'running' RETURNING dataset_id",
            )
            .bind(id)
            .bind(status)
            .bind(error)
            .bind(file_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((dataset,)) = dataset else { return Ok(false) };
            sqlx::query("UPDATE datasets SET status = 'ready', updated_at = $2 WHERE id = $1 AND status = 'locked'")
                .bind(dataset)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Notes the name the backend gave a running training's file (the job's
    /// worker, before it records the outcome).
    pub async fn set_training_file_name(&self, job_id: &str, name: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("UPDATE trainings SET file_name = $2 WHERE job_id = $1 AND status = 'running'")
                .bind(job_id)
                .bind(name)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Removes a training whose job could not be queued (refused payment),
    /// unlocking its dataset.
    pub async fn delete_unqueued_training(&self, id: &str, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let dataset: Option<(String,)> = sqlx::query_as("DELETE FROM trainings WHERE id = $1 RETURNING dataset_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((dataset,)) = dataset {
                sqlx::query("UPDATE datasets SET status = 'ready', updated_at = $2 WHERE id = $1 AND status = 'locked'")
                    .bind(dataset)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a caption job about to be queued (its id chosen first).
    pub async fn insert_dataset_caption(&self, row: &DatasetCaptionRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO dataset_captions (job_id, run_id, dataset_id, account_id, media_id, overwrite, status, \
                 caption, error, created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&row.job_id)
            .bind(&row.run_id)
            .bind(&row.dataset_id)
            .bind(&row.account_id)
            .bind(&row.media_id)
            .bind(row.overwrite)
            .bind(&row.status)
            .bind(&row.caption)
            .bind(&row.error)
            .bind(row.created_at)
            .bind(row.finished_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Removes the record of a caption job that was not queued (refused).
    pub async fn delete_dataset_caption(&self, job_id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM dataset_captions WHERE job_id = $1").bind(job_id).execute(p).await?;
        });
        Ok(())
    }

    /// The caption record of a job, if it is a caption job.
    pub async fn dataset_caption_by_job(&self, job_id: &str) -> Result<Option<DatasetCaptionRow>, StoreError> {
        let sql = format!("SELECT {CAPTION_COLS} FROM dataset_captions WHERE job_id = $1");
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(job_id).fetch_optional(p).await?))
    }

    /// The caption jobs of a dataset's latest captioning run, oldest first
    /// (empty when it was never captioned by a tool).
    pub async fn latest_caption_run(&self, dataset_id: &str) -> Result<Vec<DatasetCaptionRow>, StoreError> {
        let sql = format!(
            "SELECT {CAPTION_COLS} FROM dataset_captions WHERE run_id = (SELECT run_id FROM dataset_captions \
             WHERE dataset_id = $1 ORDER BY created_at DESC, run_id DESC LIMIT 1) ORDER BY created_at, job_id"
        );
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(dataset_id).fetch_all(p).await?))
    }

    /// Ends a pending caption job. With `applied`, the image's caption
    /// becomes `caption` in the same transaction — only while it is still
    /// `expected` (a caption someone wrote meanwhile is kept: the job then
    /// ends `kept`). Returns the status recorded, or None when the job had
    /// ended already.
    pub async fn end_dataset_caption(
        &self,
        job_id: &str,
        status: &str,
        caption: Option<&str>,
        expected: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT dataset_id, media_id FROM dataset_captions WHERE job_id = $1 AND status = 'pending'",
            )
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((dataset, media)) = row else { return Ok(None) };
            let mut status = status.to_owned();
            if status == "applied" {
                let n = sqlx::query(
                    "UPDATE dataset_images SET caption = $3 WHERE dataset_id = $1 AND media_id = $2 AND caption = $4 \
                     AND EXISTS (SELECT 1 FROM datasets d WHERE d.id = $1 AND d.status IN ('draft', 'ready'))",
                )
                .bind(&dataset)
                .bind(&media)
                .bind(caption)
                .bind(expected)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    sqlx::query("UPDATE datasets SET updated_at = $2 WHERE id = $1")
                        .bind(&dataset)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                } else {
                    status = "kept".into();
                }
            }
            let n = sqlx::query(
                "UPDATE dataset_captions SET status = $2, caption = $3, error = $4, finished_at = $5 \
                 WHERE job_id = $1 AND status = 'pending'",
            )
            .bind(job_id)
            .bind(&status)
            .bind(caption)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Ok(None);
            }
            tx.commit().await?;
            Ok(Some(status))
        })
    }

    /// Pending caption jobs whose job ended (a process died before applying
    /// it), and those created before `orphaned_before` whose job was never
    /// queued: the core completes them.
    pub async fn dataset_captions_to_complete(
        &self,
        orphaned_before: i64,
    ) -> Result<Vec<DatasetCaptionRow>, StoreError> {
        let sql = format!(
            "SELECT {CAPTION_COLS} FROM dataset_captions c WHERE c.status = 'pending' AND (EXISTS \
             (SELECT 1 FROM jobs j WHERE j.id = c.job_id AND j.status IN ('succeeded', 'failed', 'cancelled')) \
             OR (c.created_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = c.job_id)))"
        );
        Ok(with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(orphaned_before).fetch_all(p).await?))
    }

    /// Records a sample job of a training about to be queued.
    pub async fn insert_training_sample(
        &self,
        job_id: &str,
        training_id: &str,
        position: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO training_samples (job_id, training_id, position, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(job_id)
            .bind(training_id)
            .bind(position)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Removes the record of a sample job that was not queued.
    pub async fn delete_training_sample(&self, job_id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM training_samples WHERE job_id = $1").bind(job_id).execute(p).await?;
        });
        Ok(())
    }

    /// The sample jobs of a training, in order.
    pub async fn training_samples(&self, training_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = with_pool!(self, p => {
            sqlx::query_as("SELECT job_id FROM training_samples WHERE training_id = $1 ORDER BY position, job_id")
                .bind(training_id)
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(|(j,)| j).collect())
    }
}
