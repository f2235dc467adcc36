//! Media records: content-addressed blobs plus database rows with owners.

use std::sync::Arc;

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
        let blobs = self.blobs.clone();
        let limits = self.limits;
        let blob = tokio::task::spawn_blocking(move || {
            station_media::decode(&bytes, &limits).map_err(|e| MediaServiceError::Rejected(e.to_string()))?;
            blobs.put(&bytes, None).map_err(|e| MediaServiceError::Storage(e.to_string()))
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

/// 128 random bits, URL-safe: media ids must not be guessable.
pub fn new_media_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
