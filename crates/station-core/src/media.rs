//! Media records: content-addressed blobs plus database rows with owners.

use std::sync::Arc;
use std::time::Duration;

use station_media::{BlobStore, DecodeLimits};
use station_store::{AccountRow, MediaRow, Store};
use station_tools::InputDef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a media operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaServiceError {
    /// No such media, or the caller may not see it (deliberately the same answer).
    #[error("media {0} not found")]
    NotFound(String),
    /// The content is not an acceptable image: why, and which kind of refusal.
    #[error("{reason}")]
    Rejected {
        /// Which kind of refusal (front ends choose their status from it).
        problem: ImageProblem,
        /// What is wrong, for people.
        reason: String,
    },
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] station_store::StoreError),
    /// Reading or writing a blob failed.
    #[error("media store: {0}")]
    Blob(String),
    /// Every decoding slot (`media.decode_concurrency`) stayed taken while
    /// the upload waited; nothing was read or stored.
    #[error("the server is busy decoding other images; try again in {retry_after_secs} s")]
    Busy {
        /// When to try again, in seconds.
        retry_after_secs: u64,
    },
}

/// How an image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageProblem {
    /// No bytes at all.
    Empty,
    /// Not an image type Station takes.
    Unsupported,
    /// Over a size limit (bytes, pixels, frames).
    TooLarge,
    /// Broken or not decodable.
    Invalid,
}

impl MediaServiceError {
    fn rejected(problem: ImageProblem, reason: impl Into<String>) -> MediaServiceError {
        MediaServiceError::Rejected { problem, reason: reason.into() }
    }

    fn from_media(e: station_media::MediaError) -> MediaServiceError {
        use station_media::MediaError as M;
        let problem = match &e {
            M::UnsupportedFormat(_) => ImageProblem::Unsupported,
            M::TooLarge { .. } => ImageProblem::TooLarge,
            _ => ImageProblem::Invalid,
        };
        MediaServiceError::rejected(problem, e.to_string())
    }
}

/// A failure of blob I/O or of the blocking task doing it.
fn blob_error(e: impl std::fmt::Display) -> MediaServiceError {
    MediaServiceError::Blob(e.to_string())
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

/// One of the process's `media.decode_concurrency` decoding slots, held
/// while an image is read and decoded: what bounds decoding memory.
#[derive(Debug)]
pub struct DecodeSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// How long an HTTP upload waits for a decoding slot before it is answered
/// "busy" ([`MediaServiceError::Busy`]).
pub const UPLOAD_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Stores and reads media with ownership checks.
#[derive(Clone)]
pub struct MediaService {
    blobs: Arc<dyn BlobStore>,
    store: Store,
    limits: DecodeLimits,
    slots: Arc<Semaphore>,
    presign: Option<Duration>,
}

/// How a download's bytes reach the client ([`MediaService::download`]).
pub enum MediaBody {
    /// Redirect to this URL, presigned for `media.presign_seconds` (object
    /// storage with presigning on).
    Redirect(String),
    /// The bytes, `len` in all, as chunks read from the store as they are
    /// sent (never the whole file in memory).
    Stream {
        /// Total length in bytes.
        len: u64,
        /// The chunks.
        chunks: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    },
}

impl std::fmt::Debug for MediaBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaBody::Redirect(url) => f.debug_tuple("Redirect").field(url).finish(),
            MediaBody::Stream { len, .. } => f.debug_struct("Stream").field("len", len).finish_non_exhaustive(),
        }
    }
}

impl MediaService {
    /// Wraps a blob store and the database; at most `decode_concurrency`
    /// images (at least one) are decoded at once.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        store: Store,
        limits: DecodeLimits,
        decode_concurrency: usize,
    ) -> MediaService {
        MediaService { blobs, store, limits, slots: Arc::new(Semaphore::new(decode_concurrency.max(1))), presign: None }
    }

    /// Downloads from an object store redirect to URLs presigned for this
    /// many seconds (`media.presign_seconds`; `None` or 0: streamed).
    pub fn with_presign(mut self, seconds: Option<u64>) -> MediaService {
        self.presign = seconds.filter(|s| *s > 0).map(Duration::from_secs);
        self
    }

    /// Whether the blob store answers: for object storage, one listing
    /// request (the bucket exists, the credentials may read it); the
    /// sentence says what is wrong. A local folder was checked on opening.
    pub async fn check_store(&self) -> Result<(), String> {
        match self.blobs.object_store() {
            Some(o) => o.check().await,
            None => Ok(()),
        }
    }

    /// Where blobs are kept, for people: a folder or `s3://bucket/prefix`.
    pub fn store_location(&self) -> Option<String> {
        self.blobs.object_store().map(station_media::ObjectBlobStore::location)
    }

    /// Media the caller may see ([`MediaService::row`]) ready to send: a
    /// redirect to a presigned URL when the store is object storage and
    /// `media.presign_seconds` is set, else its bytes as a stream.
    pub async fn download(
        &self,
        id: &str,
        caller: Option<&AccountRow>,
    ) -> Result<(MediaRow, MediaBody), MediaServiceError> {
        use futures::StreamExt as _;
        let row = self.row(id, caller).await?;
        if let Some(o) = self.blobs.object_store() {
            if let Some(valid_for) = self.presign {
                let url = o.presign(&row.hash, valid_for).await.map_err(blob_error)?;
                return Ok((row, MediaBody::Redirect(url)));
            }
            let (len, chunks) = o.stream(&row.hash).await.map_err(blob_error)?;
            return Ok((row, MediaBody::Stream { len, chunks }));
        }
        if let Some(path) = self.blobs.local_path(&row.hash) {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| blob_error(format!("reading {}: {e}", path.display())))?;
            let len = file.metadata().await.map_err(|e| blob_error(format!("reading {}: {e}", path.display())))?.len();
            let chunks = tokio_util::io::ReaderStream::new(file).boxed();
            return Ok((row, MediaBody::Stream { len, chunks }));
        }
        let (row, bytes) = self.get(id, caller).await?;
        let len = bytes.len() as u64;
        let chunks = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }).boxed();
        Ok((row, MediaBody::Stream { len, chunks }))
    }

    /// Waits for a decoding slot (`media.decode_concurrency`), however long
    /// it takes: for bytes already in memory (chat pictures, results,
    /// native media jobs).
    pub async fn decode_slot(&self) -> DecodeSlot {
        DecodeSlot(self.slots.clone().acquire_owned().await.expect("the decode semaphore is never closed"))
    }

    /// A decoding slot for an upload whose body is not read yet: waits at
    /// most [`UPLOAD_SLOT_WAIT`], else [`MediaServiceError::Busy`]. Taken
    /// before the body is read, so uploads waiting hold no image bytes.
    pub async fn upload_slot(&self) -> Result<DecodeSlot, MediaServiceError> {
        match tokio::time::timeout(UPLOAD_SLOT_WAIT, self.decode_slot()).await {
            Ok(slot) => Ok(slot),
            Err(_) => Err(MediaServiceError::Busy { retry_after_secs: 2 }),
        }
    }

    /// Decoding slots free now (tests and health).
    pub fn free_decode_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// The most frames an image for `input` may have: `media.max_frames` for
    /// an input declaring `"animated": true` or when the input is not known
    /// yet (`None`: the media endpoint, chat pictures, results), else 1.
    pub fn max_frames_for(&self, input: Option<&InputDef>) -> u64 {
        match input {
            Some(i) if !i.animated => 1,
            _ => self.limits.max_frames,
        }
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
    /// can check every part of a request before it keeps any of it. Waits
    /// for a decoding slot; animations up to `media.max_frames` pass.
    pub async fn check_image(&self, bytes: Vec<u8>) -> Result<CheckedImage, MediaServiceError> {
        let slot = self.decode_slot().await;
        self.check_image_in(bytes, &slot, None).await
    }

    /// [`MediaService::check_image`] in a slot the caller holds (taken with
    /// [`MediaService::upload_slot`] before reading the bytes), for an image
    /// meant for `input` (its frame limit: [`MediaService::max_frames_for`]).
    /// Type, bytes, dimensions, frames and pixels over all frames are
    /// checked from the headers before any pixel buffer is allocated.
    pub async fn check_image_in(
        &self,
        bytes: Vec<u8>,
        _slot: &DecodeSlot,
        input: Option<&InputDef>,
    ) -> Result<CheckedImage, MediaServiceError> {
        if bytes.is_empty() {
            return Err(MediaServiceError::rejected(ImageProblem::Empty, "the file is empty"));
        }
        let limits = DecodeLimits { max_frames: self.max_frames_for(input), ..self.limits };
        tokio::task::spawn_blocking(move || {
            station_media::decode::check_limits(&bytes, &limits).map_err(|e| {
                if matches!(e, station_media::MediaError::TooLarge { what: "number of animation frames", .. })
                    && limits.max_frames == 1
                {
                    MediaServiceError::rejected(
                        ImageProblem::TooLarge,
                        format!("{e}: this input takes a still image, not an animation"),
                    )
                } else {
                    MediaServiceError::from_media(e)
                }
            })?;
            station_media::decode(&bytes, &limits).map_err(MediaServiceError::from_media)?;
            Ok(CheckedImage { bytes })
        })
        .await
        .map_err(blob_error)?
    }

    /// The number of frames of a stored image, counted from its headers
    /// (only GIF, PNG and WebP can be animated; `Some(1)` for the others);
    /// `None` when its bytes cannot be read.
    pub async fn stored_frames(&self, row: &MediaRow) -> Option<u64> {
        if !matches!(row.mime.as_str(), "image/gif" | "image/png" | "image/webp") {
            return Some(1);
        }
        let (blobs, hash) = (self.blobs.clone(), row.hash.clone());
        tokio::task::spawn_blocking(move || station_media::probe(&blobs.get(&hash).ok()?).ok().map(|i| i.frames))
            .await
            .ok()
            .flatten()
    }

    /// Stores an image [`MediaService::check_image`] accepted, with its row.
    pub async fn put_checked(
        &self,
        image: CheckedImage,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let row = self.stage_checked(image, account_id, job_id, kind).await?;
        self.store.insert_media(&row).await?;
        Ok(row)
    }

    /// Writes the blob of an image and returns its media row WITHOUT
    /// recording it: a job's outputs are recorded by the fenced finish of
    /// the worker that still holds the job (a blob alone is never served).
    pub(crate) async fn stage_image(
        &self,
        bytes: Vec<u8>,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let image = self.check_image(bytes).await?;
        self.stage_checked(image, account_id, job_id, kind).await
    }

    /// [`MediaService::stage_image`] for a file that is not an image (a
    /// trained LoRA): stored by content hash, no dimensions.
    pub(crate) async fn stage_file(
        &self,
        bytes: Vec<u8>,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let blobs = self.blobs.clone();
        let blob = tokio::task::spawn_blocking(move || blobs.put(&bytes, None).map_err(blob_error))
            .await
            .map_err(blob_error)??;
        Ok(MediaRow {
            id: new_media_id(),
            hash: blob.hash,
            mime: blob.mime,
            size: blob.size as i64,
            width: 0,
            height: 0,
            account_id: account_id.map(str::to_owned),
            job_id: job_id.map(str::to_owned),
            kind: kind.into(),
            created_at: station_store::now_ms(),
        })
    }

    async fn stage_checked(
        &self,
        image: CheckedImage,
        account_id: Option<&str>,
        job_id: Option<&str>,
        kind: &str,
    ) -> Result<MediaRow, MediaServiceError> {
        let blobs = self.blobs.clone();
        let blob = tokio::task::spawn_blocking(move || blobs.put(&image.bytes, None).map_err(blob_error))
            .await
            .map_err(blob_error)??;
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
        Ok(row)
    }

    /// The record of media `id` if `caller` may see it (its owner, an admin,
    /// or `None` for trusted internal use); someone else's answers NotFound,
    /// exactly like an id that does not exist.
    pub async fn row(&self, id: &str, caller: Option<&AccountRow>) -> Result<MediaRow, MediaServiceError> {
        let row = self.store.get_media(id).await?.ok_or_else(|| MediaServiceError::NotFound(id.into()))?;
        if let Some(c) = caller
            && !c.may_access(row.account_id.as_deref())
        {
            return Err(MediaServiceError::NotFound(id.into()));
        }
        Ok(row)
    }

    /// Reads a media record the caller may see ([`MediaService::row`]) with its bytes.
    pub async fn get(&self, id: &str, caller: Option<&AccountRow>) -> Result<(MediaRow, Vec<u8>), MediaServiceError> {
        let row = self.row(id, caller).await?;
        let blobs = self.blobs.clone();
        let hash = row.hash.clone();
        let bytes =
            tokio::task::spawn_blocking(move || blobs.get(&hash)).await.map_err(blob_error)?.map_err(blob_error)?;
        Ok((row, bytes))
    }

    /// A JPEG thumbnail (at most `max_side` pixels a side) of media the
    /// caller may see, made once and kept as a derived blob.
    pub async fn thumbnail(
        &self,
        id: &str,
        caller: Option<&AccountRow>,
        max_side: u32,
    ) -> Result<Vec<u8>, MediaServiceError> {
        let row = self.row(id, caller).await?;
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let thumb = blobs.thumbnail(&row.hash, max_side)?;
            blobs.get(&thumb.hash)
        })
        .await
        .map_err(blob_error)?
        .map_err(blob_error)
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
        let storage = |e: &dyn std::fmt::Display| blob_error(e);
        let row = self.store.get_media(media_id).await?.ok_or_else(|| MediaServiceError::NotFound(media_id.into()))?;
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
            let bytes = station_media::ops::fit_for_delivery(&original, &limits).map_err(|e| {
                MediaServiceError::rejected(
                    ImageProblem::Invalid,
                    format!("media {hash} cannot be fitted for delivery: {e}"),
                )
            })?;
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

/// The file extension (without the dot) for a media type: `png`, `jpg`,
/// `webp`, `gif`, or `bin`.
pub use station_media::extension_for_mime;
/// A platform's upload limits ([`MediaService::deliverable`]), and the
/// largest side Station ever writes.
pub use station_media::ops::{DeliveryLimits, MAX_OUTPUT_SIDE};

/// Image bytes not stored (an inline preview) fitted to a platform's
/// limits, with their type: `(bytes, mime)`. Stored media use
/// [`MediaService::deliverable`], which caches the fitted copy.
pub async fn fit_bytes(bytes: Vec<u8>, limits: DeliveryLimits) -> Result<(Vec<u8>, String), MediaServiceError> {
    tokio::task::spawn_blocking(move || {
        let fitted = station_media::ops::fit_for_delivery(&bytes, &limits)
            .map_err(|e| MediaServiceError::rejected(ImageProblem::Invalid, format!("cannot be fitted: {e}")))?;
        let mime = station_media::probe(&fitted).map(|i| i.format.mime().to_string()).unwrap_or_default();
        Ok((fitted, mime))
    })
    .await
    .map_err(blob_error)?
}

impl crate::Station {
    /// The name a stored image gets when it is downloaded or sent as a file:
    /// `<tool>-<id prefix>.<ext>` for a job's result, `<id prefix>.<ext>`
    /// for other media, the extension from `mime` (the stored type, or that
    /// of a re-encoded copy). The prefix is the start of the media id, so a
    /// name leads back to its media.
    pub async fn download_name(&self, row: &MediaRow, mime: &str) -> String {
        let short = &row.id[..row.id.len().min(12)];
        let tool = match &row.job_id {
            Some(job) => self.store.get_job(job).await.ok().flatten().map(|j| j.tool_id),
            None => None,
        };
        let tool: String = tool
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        let ext = extension_for_mime(mime);
        if tool.is_empty() { format!("{short}.{ext}") } else { format!("{tool}-{short}.{ext}") }
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

/// Copies the local media folder (`media_dir`) into the bucket of
/// `[media.s3]` for `station media migrate --to s3`: the bucket is checked
/// first, then every blob and index is copied and verified by hash
/// ([`station_media::ObjectBlobStore::import_local`]); re-running copies
/// only what is missing. `total(files, bytes)` comes once before the first
/// file, `on_file(path, bytes, outcome)` after each. Works whatever
/// `media.store` says, so it runs before the switch.
pub async fn migrate_to_object_store(
    config: &crate::Config,
    total: impl FnOnce(u64, u64),
    on_file: impl FnMut(&str, u64, Result<station_media::object::ImportOutcome, &str>),
) -> Result<station_media::object::ImportReport, String> {
    let dir = config.media_dir();
    if !dir.is_dir() {
        return Err(format!("media_dir {} does not exist: there is nothing to copy", dir.display()));
    }
    let bucket =
        station_media::ObjectBlobStore::open(&config.media.s3.settings()).map_err(|e| format!("[media.s3]: {e}"))?;
    bucket.check().await?;
    bucket.import_local(&dir, total, on_file).await.map_err(|e| e.to_string())
}
