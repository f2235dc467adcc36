//! Media records: content-addressed blobs plus database rows with owners.

use std::sync::Arc;

use station_media::ops::DeliveryLimits;
use station_media::{BlobStore, DecodeLimits};
use station_store::{AccountRow, MediaRow, Store};

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaServiceError {
    /// No such media, or the caller may not see it (deliberately the same answer).
    #[error("media {0} not found")]
    NotFound(String),
    /// The content is not an acceptable image.
    #[error("{0}")]
    Rejected(String),
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Image bytes that decoded within the limits ([`MediaService::check_image`]),
/// ready to store without decoding them again.
#[derive(Debug, Clone)]
pub struct CheckedImage {
    bytes: Vec<u8>,
}

impl CheckedImage {
    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Stores and reads media with ownership checks.
#[derive(Clone)]
pub struct MediaService {
    blobs: Arc<dyn BlobStore>,
    store: Store,
    limits: DecodeLimits,
}

impl MediaService {
    /// Wraps a blob store and the database.
    pub fn new(blobs: Arc<dyn BlobStore>, store: Store, limits: DecodeLimits) -> MediaService {
        MediaService { blobs, store, limits }
    }

    /// The underlying blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Stores bytes after checking they decode as an image within limits
    /// (type from content, dimensions from the header before any allocation).
    pub async fn put_image(
        &self,
        bytes: Vec<u8>,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let image = self.check_image(bytes).await?;
        self.put_checked(image, account_id, job_id, kind).await
    }

    /// Decodes bytes within the limits without storing anything, so a caller
    /// can check every part of a request before it keeps any of it.
    pub async fn check_image(&self, bytes: Vec<u8>) -> Result<CheckedImage, MediaServiceError> {
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            station_media::decode(&bytes, &limits).map_err(|e| MediaServiceError::Rejected(e.to_string()))?;
            Ok(CheckedImage { bytes })
        })
        .await
        .map_err(|e| MediaServiceError::Storage(e.to_string()))?
    }

    /// Stores an image [`MediaService::check_image`] accepted, with its row.
    pub async fn put_checked(
        &self,
        image: CheckedImage,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let blobs = self.blobs.clone();
        let blob = tokio::task::spawn_blocking(move || {
            blobs.put(&image.bytes, None).map_err(|e| MediaServiceError::Storage(e.to_string()))
        })
        .await
        .map_err(|e| MediaServiceError::Storage(e.to_string()))??;
        let row = MediaRow {
            id: new_media_id(),
            hash: blob.hash,
            mime: blob.mime,
            size: blob.size as i64,
            width: blob.width.unwrap_or(0) as i64,
            height: blob.height.unwrap_or(0) as i64,
            account_id: account_id.map(str::to_owned),
            job_id: job_id.map(str::to_owned),
            kind: kind.into(),
            created_at: station_store::now_ms(),
        };
        self.store.insert_media(&row).await.map_err(|e| MediaServiceError::Storage(e.to_string()))?;
        Ok(row)
    }

    /// Reads a media record the caller may see (owner, admin, or `None` caller
    /// for trusted internal use).
    pub async fn get(&self, id: &str, caller: Option<&AccountRow>) -> Result<(MediaRow, Vec<u8>), MediaServiceError> {
        let row = self
            .store
            .get_media(id)
            .await
            .map_err(|e| MediaServiceError::Storage(e.to_string()))?
            .ok_or_else(|| MediaServiceError::NotFound(id.into()))?;
        if let Some(c) = caller
            && c.role != "admin"
            && row.account_id.as_deref() != Some(c.id.as_str())
        {
            return Err(MediaServiceError::NotFound(id.into()));
        }
        let blobs = self.blobs.clone();
        let hash = row.hash.clone();
        let bytes = tokio::task::spawn_blocking(move || blobs.get(&hash))
            .await
            .map_err(|e| MediaServiceError::Storage(e.to_string()))?
            .map_err(|e| MediaServiceError::Storage(e.to_string()))?;
        Ok((row, bytes))
    }
}

impl MediaService {
    /// A stored image ready for a platform with these limits: `(bytes, mime,
    /// was_changed)`. An image that already fits comes back as stored
    /// (`was_changed` false, so an animation stays animated); one that does
    /// not is re-encoded and/or scaled down by `fit_for_delivery`, and that
    /// variant is cached as a derived blob, so the next delivery of the same
    /// media to the same limits costs one file read. The original stays
    /// stored and downloadable. Trusted internal use: no owner check (front
    /// ends deliver a job's results to where the job came from).
    pub async fn deliverable(
        &self,
        media_id: &str,
        limits: DeliveryLimits,
    ) -> Result<(Vec<u8>, String, bool), MediaServiceError> {
        let storage = |e: &dyn std::fmt::Display| MediaServiceError::Storage(e.to_string());
        let row = self
            .store
            .get_media(media_id)
            .await
            .map_err(|e| storage(&e))?
            .ok_or_else(|| MediaServiceError::NotFound(media_id.into()))?;
        let (w, h) = (row.width.max(0) as u64, row.height.max(0) as u64);
        let fits = row.size.max(0) as u64 <= limits.max_bytes
            && w <= u64::from(limits.max_side)
            && h <= u64::from(limits.max_side)
            && limits.max_side_sum.is_none_or(|s| w + h <= u64::from(s));
        let blobs = self.blobs.clone();
        let hash = row.hash.clone();
        if fits {
            let bytes = tokio::task::spawn_blocking(move || blobs.get(&hash))
                .await
                .map_err(|e| storage(&e))?
                .map_err(|e| storage(&e))?;
            return Ok((bytes, row.mime, false));
        }
        let variant = format!(
            "fit-{}-{}-{}",
            limits.max_bytes,
            limits.max_side,
            limits.max_side_sum.map_or("none".to_string(), |s| s.to_string())
        );
        let fitted = tokio::task::spawn_blocking(move || -> Result<_, MediaServiceError> {
            if let Some(blob) = blobs.derived(&hash, &variant).map_err(|e| storage(&e))? {
                let bytes = blobs.get(&blob.hash).map_err(|e| storage(&e))?;
                return Ok((bytes, blob.mime));
            }
            let original = blobs.get(&hash).map_err(|e| storage(&e))?;
            let bytes = station_media::ops::fit_for_delivery(&original, &limits)
                .map_err(|e| MediaServiceError::Rejected(format!("media {hash} cannot be fitted for delivery: {e}")))?;
            let blob = blobs.put_derived(&hash, &variant, &bytes).map_err(|e| storage(&e))?;
            Ok((bytes, blob.mime))
        })
        .await
        .map_err(|e| storage(&e))??;
        Ok((fitted.0, fitted.1, true))
    }
}

impl crate::Station {
    /// See [`MediaService::deliverable`]: a stored image fitted to a
    /// platform's upload limits, `(bytes, mime, was_changed)`, cached.
    pub async fn deliverable(
        &self,
        media_id: &str,
        limits: DeliveryLimits,
    ) -> Result<(Vec<u8>, String, bool), MediaServiceError> {
        self.media.deliverable(media_id, limits).await
    }
}

/// 128 random bits, URL-safe: media ids must not be guessable.
pub fn new_media_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The key in an account's settings (`tool_settings` under
/// [`crate::watermark::ACCOUNT_SETTINGS`]) that asks chat platforms to send
/// results as files with their original bytes instead of (re-compressed) photos.
pub const ORIGINALS_KEY: &str = "send_originals";

impl crate::Station {
    /// Whether the account wants results as files with the original bytes.
    pub async fn sends_originals(&self, account_id: &str) -> Result<bool, station_store::StoreError> {
        let settings = self.store.tool_settings(account_id, crate::watermark::ACCOUNT_SETTINGS).await?;
        Ok(settings.get(ORIGINALS_KEY).and_then(serde_json::Value::as_bool).unwrap_or(false))
    }

    /// Turns "send originals as files" on or off for an account's results.
    pub async fn set_send_originals(
        &self,
        account: &station_store::AccountRow,
        on: bool,
    ) -> Result<(), station_store::StoreError> {
        let key = crate::watermark::ACCOUNT_SETTINGS;
        let mut settings = self.store.tool_settings(&account.id, key).await?;
        settings.insert(ORIGINALS_KEY.into(), serde_json::Value::Bool(on));
        self.store.save_tool_settings(&account.id, key, &settings, station_store::now_ms()).await
    }
}
