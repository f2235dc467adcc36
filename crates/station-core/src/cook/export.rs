//! A cook's export: the accepted pieces the cull keeps, each as its image
//! and a metadata file in the common NFT JSON shape (`name` from the
//! recipe's template, `description`, `image`, `attributes: [{trait_type,
//! value}]`), optionally in a shuffled order. It is an ordinary collection
//! export row (`options` set), claimed and built by the same export worker,
//! with the same progress, lease and expiring download.

use serde_json::{Value, json};
use station_store::{AccountRow, CollectionExportRow, CookPieceRow, now_ms};
use tracing::{info, warn};

use super::recipe::{Chosen, SplitMix64, fill_template, mix};
use super::{invalid, parse_stored};
use crate::Station;
use crate::collections::{CollectionError, EXPORT_LEASE, exports_dir, write_zip};

/// The pieces an export holds: made, accepted and kept, by number.
fn exportable(pieces: Vec<CookPieceRow>) -> Vec<CookPieceRow> {
    pieces.into_iter().filter(|p| p.status == "succeeded" && p.review == "accepted" && p.kept == 1).collect()
}

impl Station {
    /// Asks for the NFT export of a cooked collection `account` owns: a
    /// durable row the export worker builds in the background. `shuffle`
    /// puts the pieces in an order drawn from the cook seed (numbers 1…N
    /// follow that order).
    pub async fn export_cook(
        &self,
        account: &AccountRow,
        collection_id: &str,
        shuffle: bool,
    ) -> Result<CollectionExportRow, CollectionError> {
        let row = self.store_cook_export(account, collection_id, shuffle).await?;
        self.export_wake.notify_one();
        Ok(row)
    }

    /// [`Station::export_cook`] built in this process now (the CLI, which
    /// runs no workers), with `progress(done, total)` after each piece.
    pub async fn export_cook_now(
        &self,
        account: &AccountRow,
        collection_id: &str,
        shuffle: bool,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
    ) -> Result<CollectionExportRow, CollectionError> {
        let row = self.store_cook_export(account, collection_id, shuffle).await?;
        self.build_export_now(account, row, progress).await
    }

    async fn store_cook_export(
        &self,
        account: &AccountRow,
        collection_id: &str,
        shuffle: bool,
    ) -> Result<CollectionExportRow, CollectionError> {
        if let Some(off) = self.feature_refusal("collections", account).await {
            return Err(CollectionError::Invalid(vec![off]));
        }
        let c = self.owned(account, collection_id).await?;
        if self.store.get_cook(&c.id).await?.is_none() {
            return Err(invalid("cook", "this collection has no cook; export it as a plain collection"));
        }
        let total = exportable(self.store.cook_pieces(&c.id).await?).len() as i64;
        if total == 0 {
            return Err(invalid("export", "no piece is accepted and kept yet; review the pieces first"));
        }
        let options = json!({"nft": true, "shuffle": shuffle}).to_string();
        let row = crate::collections::queued_export(c.id, account, total, Some(options));
        self.store.insert_collection_export(&row).await?;
        Ok(row)
    }

    /// Builds a claimed cook export: `images/<n>.<ext>` with the original
    /// bytes, `metadata/<n>.json` per piece, and `metadata.json` with the
    /// collection, cook seed, recipe and every piece; progress and lease
    /// after each piece, fenced by `owner`; through a temporary file.
    pub(crate) async fn build_nft_export(
        &self,
        export: &CollectionExportRow,
        owner: &str,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
    ) -> Result<(), CollectionError> {
        let options: Value = export.options.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
        let shuffle = options["shuffle"].as_bool().unwrap_or(false);
        let Some(c) = self.store.get_collection(&export.collection_id).await? else {
            return Err(CollectionError::Io("the collection was deleted".into()));
        };
        let Some(cook) = self.store.get_cook(&c.id).await? else {
            return Err(CollectionError::Io("the collection's cook was deleted".into()));
        };
        let r = parse_stored(&cook.recipe)?;
        let mut pieces = exportable(self.store.cook_pieces(&c.id).await?);
        if shuffle {
            let mut rng = SplitMix64::new(mix(cook.seed as u64 ^ 0x5A0F_F1E5));
            for i in (1..pieces.len()).rev() {
                pieces.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let total = pieces.len() as i64;
        let dir = exports_dir(self);
        std::fs::create_dir_all(&dir).map_err(|e| CollectionError::Io(format!("{}: {e}", dir.display())))?;
        let tmp = dir.join(format!("{}.zip.part", export.id));
        let (tx, rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1);
        let writer = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || write_zip(&tmp, rx)
        });
        let lease = || now_ms() + EXPORT_LEASE.as_millis() as i64;
        let mut all = vec![];
        for (i, p) in pieces.iter().enumerate() {
            let n = i as i64 + 1;
            let Some(media) = &p.media_id else { continue };
            let Some(m) = self.store.get_media(media).await? else {
                return Err(CollectionError::Io(format!("piece {}'s image was deleted", p.number)));
            };
            let (_, bytes) = self.media.get(&m.id, None).await.map_err(|e| CollectionError::Io(e.to_string()))?;
            let ext = crate::media::extension_for_mime(&m.mime);
            let image = format!("images/{n}.{ext}");
            if tx.send((image.clone(), bytes)).await.is_err() {
                break;
            }
            let chosen: Vec<Chosen> = serde_json::from_str(&p.traits).unwrap_or_default();
            let meta = json!({
                "name": fill_template(&r.name_template, &c.name, n, &chosen),
                "description": fill_template(&r.description, &c.name, n, &chosen),
                "image": image,
                "edition": n,
                "attributes": chosen.iter().map(|t| json!({"trait_type": t.category, "value": t.name})).collect::<Vec<_>>(),
                "piece": p.number,
                "seed": p.seed,
            });
            let text = serde_json::to_vec_pretty(&meta).map_err(|e| CollectionError::Io(e.to_string()))?;
            if tx.send((format!("metadata/{n}.json"), text)).await.is_err() {
                break;
            }
            all.push(meta);
            if !self.store.collection_export_progress(&export.id, owner, n, total, lease()).await? {
                let _ = std::fs::remove_file(&tmp);
                return Err(CollectionError::Io("another process took this export over".into()));
            }
            progress(n, total);
        }
        let metadata = json!({
            "collection": {"name": c.name, "description": c.description, "pieces": total, "exported_at": now_ms()},
            "cook": {"seed": cook.seed, "shuffled": shuffle, "recipe": r.to_json()},
            "pieces": all,
        });
        let text = serde_json::to_vec_pretty(&metadata).map_err(|e| CollectionError::Io(e.to_string()))?;
        let _ = tx.send(("metadata.json".into(), text)).await;
        drop(tx);
        let size = writer.await.map_err(|e| CollectionError::Io(e.to_string()))?.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CollectionError::Io(format!("writing the ZIP: {e}"))
        })?;
        let name = format!("{}.zip", export.id);
        std::fs::rename(&tmp, dir.join(&name)).map_err(|e| CollectionError::Io(e.to_string()))?;
        let now = now_ms();
        let ttl = (self.config.collections.export_ttl_hours as i64).saturating_mul(3_600_000);
        if !self
            .store
            .finish_collection_export(
                &export.id,
                owner,
                "succeeded",
                Some(&name),
                Some(size),
                None,
                now,
                Some(now.saturating_add(ttl)),
            )
            .await?
        {
            warn!(export = %export.id, "export finished by another process");
        }
        info!(export = %export.id, pieces = total, "cook export built");
        Ok(())
    }
}
