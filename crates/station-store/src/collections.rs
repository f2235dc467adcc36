//! Collections (issue 24): an owner's ordered items (generation outputs and
//! LoRAs), share links kept as token hashes, and ZIP exports claimed with a
//! lease like jobs. The core decides who may do what; these statements
//! carry it out atomically.

use crate::db::BeginWrite as _;
use serde::Serialize;

use crate::db::{Store, StoreError, with_pool};

/// One collection.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CollectionRow {
    /// Unguessable id (128 random bits).
    pub id: String,
    /// Owner account.
    pub owner_id: String,
    /// Name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// The item shown as the cover (None: the first image).
    pub cover_item_id: Option<String>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

/// One item of a collection.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CollectionItemRow {
    /// Item id.
    pub id: String,
    /// The collection.
    pub collection_id: String,
    /// `media` or `lora`.
    pub kind: String,
    /// Media id or LoRA slug.
    pub ref_id: String,
    /// Order (ascending).
    pub position: i64,
    /// Account that added it.
    pub added_by: String,
    /// Added (Unix ms).
    pub added_at: i64,
}

/// One share link (its token is stored only hashed).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CollectionShareRow {
    /// Share id (shown to the owner, used to revoke).
    pub id: String,
    /// The collection.
    pub collection_id: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// `view` or `add`.
    pub permission: String,
    /// Accounts that may add (JSON array of account ids).
    pub accounts: String,
    /// Who made it.
    pub created_by: String,
    /// Made (Unix ms).
    pub created_at: i64,
    /// Ends (Unix ms).
    pub expires_at: i64,
    /// Revoked (Unix ms).
    pub revoked_at: Option<i64>,
}

/// One ZIP export.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CollectionExportRow {
    /// Export id (unguessable).
    pub id: String,
    /// The collection.
    pub collection_id: String,
    /// Who asked.
    pub account_id: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub status: String,
    /// Items written so far.
    pub done: i64,
    /// Items to write.
    pub total: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// File name in the exports folder.
    pub file: Option<String>,
    /// Bytes of the ZIP.
    pub size: Option<i64>,
    /// Process building it.
    pub lease_owner: Option<String>,
    /// Its lease lapses then.
    pub lease_expires_at: Option<i64>,
    /// Asked (Unix ms).
    pub created_at: i64,
    /// Built (Unix ms).
    pub finished_at: Option<i64>,
    /// The download ends (Unix ms).
    pub expires_at: Option<i64>,
    /// Options of a cook export (JSON `{"nft": bool, "shuffle": bool}`).
    pub options: Option<String>,
}

const COLLECTION_COLUMNS: &str = "id, owner_id, name, description, visibility, cover_item_id, created_at, updated_at";
const ITEM_COLUMNS: &str = "id, collection_id, kind, ref_id, position, added_by, added_at";
const SHARE_COLUMNS: &str =
    "id, collection_id, token_hash, permission, accounts, created_by, created_at, expires_at, revoked_at";
const EXPORT_COLUMNS: &str = "id, collection_id, account_id, status, done, total, error, file, size, lease_owner, \
     lease_expires_at, created_at, finished_at, expires_at, options";

fn sql(s: String) -> sqlx::AssertSqlSafe<String> {
    crate::db::safe(&s)
}

impl Store {
    /// Records a new collection.
    pub async fn insert_collection(&self, c: &CollectionRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO collections (id, owner_id, name, description, visibility, cover_item_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&c.id).bind(&c.owner_id).bind(&c.name).bind(&c.description).bind(&c.visibility)
            .bind(&c.cover_item_id).bind(c.created_at).bind(c.updated_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// One collection by id.
    pub async fn get_collection(&self, id: &str) -> Result<Option<CollectionRow>, StoreError> {
        let q = sql(format!("SELECT {COLLECTION_COLUMNS} FROM collections WHERE id = $1"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(id).fetch_optional(p).await?))
    }

    /// Collections of `owner_id` (every one), or public ones when None,
    /// newest first, at most `limit`.
    pub async fn list_collections(&self, owner_id: Option<&str>, limit: i64) -> Result<Vec<CollectionRow>, StoreError> {
        match owner_id {
            Some(owner) => {
                let q = sql(format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE owner_id = $1 ORDER BY created_at DESC, id LIMIT $2"
                ));
                with_pool!(self, p => Ok(sqlx::query_as(q).bind(owner).bind(limit).fetch_all(p).await?))
            }
            None => {
                let q = sql(format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE visibility = 'public' \
                     ORDER BY created_at DESC, id LIMIT $1"
                ));
                with_pool!(self, p => Ok(sqlx::query_as(q).bind(limit).fetch_all(p).await?))
            }
        }
    }

    /// Writes a collection's name, description, visibility and cover; true
    /// if it exists.
    pub async fn update_collection(&self, c: &CollectionRow) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE collections SET name = $2, description = $3, visibility = $4, cover_item_id = $5, updated_at = $6 \
                 WHERE id = $1",
            )
            .bind(&c.id).bind(&c.name).bind(&c.description).bind(&c.visibility).bind(&c.cover_item_id)
            .bind(c.updated_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Deletes a collection with its items and share links (explicitly, not
    /// by cascade: a foreign SQLite connection may not enforce keys); its
    /// exports stay until they expire. True if it existed.
    pub async fn delete_collection(&self, id: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM collection_items WHERE collection_id = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM collection_shares WHERE collection_id = $1").bind(id).execute(&mut *tx).await?;
            let r = sqlx::query("DELETE FROM collections WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// A collection's items in order.
    pub async fn collection_items(&self, collection_id: &str) -> Result<Vec<CollectionItemRow>, StoreError> {
        let q = sql(format!(
            "SELECT {ITEM_COLUMNS} FROM collection_items WHERE collection_id = $1 ORDER BY position, added_at, id"
        ));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(collection_id).fetch_all(p).await?))
    }

    /// Appends an item after the last one; `None` if the collection holds
    /// that thing already (nothing written), else the stored item. The
    /// collection's `updated_at` moves in the same transaction.
    pub async fn add_collection_item(
        &self,
        id: &str,
        collection_id: &str,
        kind: &str,
        ref_id: &str,
        added_by: &str,
        now: i64,
    ) -> Result<Option<CollectionItemRow>, StoreError> {
        let q = sql(format!(
            "INSERT INTO collection_items (id, collection_id, kind, ref_id, position, added_by, added_at) \
             SELECT $1, $2, $3, $4, COALESCE(MAX(position), 0) + 1, $5, $6 FROM collection_items WHERE collection_id = $2 \
             ON CONFLICT (collection_id, kind, ref_id) DO NOTHING RETURNING {ITEM_COLUMNS}"
        ));
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<CollectionItemRow> = sqlx::query_as(q)
                .bind(id).bind(collection_id).bind(kind).bind(ref_id).bind(added_by).bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                sqlx::query("UPDATE collections SET updated_at = $2 WHERE id = $1")
                    .bind(collection_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Removes one item (and unsets it as the cover); true if it was there.
    pub async fn remove_collection_item(
        &self,
        collection_id: &str,
        item_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let r = sqlx::query("DELETE FROM collection_items WHERE collection_id = $1 AND id = $2")
                .bind(collection_id).bind(item_id).execute(&mut *tx).await?;
            if r.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE collections SET updated_at = $3, \
                     cover_item_id = CASE WHEN cover_item_id = $2 THEN NULL ELSE cover_item_id END WHERE id = $1",
                )
                .bind(collection_id).bind(item_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Puts the items in the order of `item_ids` (positions 1, 2, …), in
    /// one transaction. The core checks the list names every item once.
    pub async fn reorder_collection_items(
        &self,
        collection_id: &str,
        item_ids: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for (i, id) in item_ids.iter().enumerate() {
                sqlx::query("UPDATE collection_items SET position = $3 WHERE collection_id = $1 AND id = $2")
                    .bind(collection_id).bind(id).bind(i as i64 + 1).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE collections SET updated_at = $2 WHERE id = $1")
                .bind(collection_id).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records a share link.
    pub async fn insert_collection_share(&self, s: &CollectionShareRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO collection_shares (id, collection_id, token_hash, permission, accounts, created_by, created_at, \
                 expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&s.id).bind(&s.collection_id).bind(&s.token_hash).bind(&s.permission).bind(&s.accounts)
            .bind(&s.created_by).bind(s.created_at).bind(s.expires_at).bind(s.revoked_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The share link whose token hashes to `token_hash`, whatever its state.
    pub async fn collection_share_by_hash(&self, token_hash: &str) -> Result<Option<CollectionShareRow>, StoreError> {
        let q = sql(format!("SELECT {SHARE_COLUMNS} FROM collection_shares WHERE token_hash = $1"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(token_hash).fetch_optional(p).await?))
    }

    /// A collection's share links, newest first.
    pub async fn collection_shares(&self, collection_id: &str) -> Result<Vec<CollectionShareRow>, StoreError> {
        let q = sql(format!(
            "SELECT {SHARE_COLUMNS} FROM collection_shares WHERE collection_id = $1 ORDER BY created_at DESC, id"
        ));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(collection_id).fetch_all(p).await?))
    }

    /// Revokes one share link of a collection; true if it was live.
    pub async fn revoke_collection_share(
        &self,
        collection_id: &str,
        share_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE collection_shares SET revoked_at = $3 WHERE collection_id = $1 AND id = $2 AND revoked_at IS NULL",
            )
            .bind(collection_id).bind(share_id).bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Records an export to build (status `queued`).
    pub async fn insert_collection_export(&self, e: &CollectionExportRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO collection_exports (id, collection_id, account_id, status, done, total, created_at, options) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&e.id).bind(&e.collection_id).bind(&e.account_id).bind(&e.status).bind(e.done).bind(e.total)
            .bind(e.created_at).bind(&e.options)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// One export by id.
    pub async fn get_collection_export(&self, id: &str) -> Result<Option<CollectionExportRow>, StoreError> {
        let q = sql(format!("SELECT {EXPORT_COLUMNS} FROM collection_exports WHERE id = $1"));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(id).fetch_optional(p).await?))
    }

    /// Claims the oldest export that is queued or whose builder's lease
    /// lapsed (a crashed process), or only export `only` when given:
    /// `running` under `owner` until `lease_until`. The conditional UPDATE
    /// decides between racing processes, so each export has one builder at
    /// a time.
    pub async fn claim_collection_export(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        only: Option<&str>,
    ) -> Result<Option<CollectionExportRow>, StoreError> {
        const PICK: &str = "SELECT id FROM collection_exports WHERE status = 'queued' \
             OR (status = 'running' AND lease_expires_at < $1) ORDER BY created_at, id LIMIT 1";
        const TAKE: &str = "UPDATE collection_exports SET status = 'running', lease_owner = $2, lease_expires_at = $3 \
             WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND lease_expires_at < $4))";
        let q = sql(format!("SELECT {EXPORT_COLUMNS} FROM collection_exports WHERE id = $1"));
        with_pool!(self, p => {
            loop {
                let id = match only {
                    Some(id) => id.to_owned(),
                    None => {
                        let Some((id,)): Option<(String,)> = sqlx::query_as(PICK).bind(now).fetch_optional(p).await? else {
                            return Ok(None);
                        };
                        id
                    }
                };
                let n = sqlx::query(TAKE).bind(&id).bind(owner).bind(lease_until).bind(now).execute(p).await?.rows_affected();
                if n == 1 {
                    return Ok(sqlx::query_as(q).bind(&id).fetch_optional(p).await?);
                }
                if only.is_some() {
                    return Ok(None);
                }
            }
        })
    }

    /// Records an export's progress and renews its lease, only while
    /// `owner` still holds it; false if it lost the export.
    pub async fn collection_export_progress(
        &self,
        id: &str,
        owner: &str,
        done: i64,
        total: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE collection_exports SET done = $3, total = $4, lease_expires_at = $5 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(id).bind(owner).bind(done).bind(total).bind(lease_until)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends an export (fenced by its lease): `succeeded` with its file and
    /// size and when the download expires, or `failed` with `error`. False
    /// if `owner` no longer held it.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_collection_export(
        &self,
        id: &str,
        owner: &str,
        status: &str,
        file: Option<&str>,
        size: Option<i64>,
        error: Option<&str>,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = with_pool!(self, p => {
            sqlx::query(
                "UPDATE collection_exports SET status = $3, file = $4, size = $5, error = $6, finished_at = $7, \
                 expires_at = $8, lease_owner = NULL, lease_expires_at = NULL, done = CASE WHEN $3 = 'succeeded' THEN total ELSE done END \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(id).bind(owner).bind(status).bind(file).bind(size).bind(error).bind(now).bind(expires_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Succeeded exports whose download ended before `now` and still have
    /// a file (to delete).
    pub async fn expired_collection_exports(&self, now: i64) -> Result<Vec<CollectionExportRow>, StoreError> {
        let q = sql(format!(
            "SELECT {EXPORT_COLUMNS} FROM collection_exports WHERE status = 'succeeded' AND file IS NOT NULL \
             AND expires_at < $1 ORDER BY expires_at LIMIT 100"
        ));
        with_pool!(self, p => Ok(sqlx::query_as(q).bind(now).fetch_all(p).await?))
    }

    /// Forgets an expired export's file (after it was deleted).
    pub async fn forget_collection_export_file(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query("UPDATE collection_exports SET file = NULL WHERE id = $1").bind(id).execute(p).await?;
        });
        Ok(())
    }
}
