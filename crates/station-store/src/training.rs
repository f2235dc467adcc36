//! LoRA training: datasets with their images and captions, and trainings
//! (each one job; its outcome turns into a catalog LoRA through the core).

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
            let mut tx = p.begin().await?;
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
            let mut tx = p.begin().await?;
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
            let mut tx = p.begin().await?;
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
            let mut tx = p.begin().await?;
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
}
