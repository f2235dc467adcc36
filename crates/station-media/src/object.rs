//! Content-addressed blobs on S3-compatible object storage.
//!
//! The same layout as the filesystem store ([`crate::MediaStore`]) under a key
//! prefix: `P/ab/cd/<hash>` for blobs, `P/thumbs/ab/<hash>-<side>.json` and
//! `P/derived/ab/<hash>-<variant>.json` for the indexes of derived blobs. A
//! local store therefore copies over file by file (see
//! [`ObjectBlobStore::import_local`]), and every Station process pointed at
//! the bucket serves every other's media.
//!
//! `object_store` is async; [`BlobStore`] is synchronous and called on the
//! blocking pool (`spawn_blocking`), so its methods here drive the async calls
//! with the runtime handle captured when the store was opened. Never call the
//! [`BlobStore`] methods from async code directly; use the `*_async` methods
//! (streamed downloads, presigned URLs, the start-up check) there.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::decode::{self, DecodeLimits};
use crate::error::{MediaError, Result};
use crate::ops::{self, ThumbnailOptions};
use crate::store::{BlobStore, StoredBlob, content_hash, describe, validate_hash, validate_variant};

/// Where the bucket is and how to reach it. Credentials left unset are read
/// from the standard `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStoreSettings {
    /// The bucket's name.
    pub bucket: String,
    /// Key prefix every object of this store is kept under (`""`: the
    /// bucket's root). Leading and trailing `/` are ignored.
    pub prefix: String,
    /// Endpoint URL of an S3-compatible service (MinIO, R2, ...); unset: AWS.
    pub endpoint: Option<String>,
    /// Region requests are signed for.
    pub region: String,
    /// Access key id; unset: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key; unset: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
}

/// How one file of a local store fared in [`ObjectBlobStore::import_local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Uploaded, read back and its hash checked.
    Copied,
    /// Already in the bucket with the right content (checked by hash).
    AlreadyThere,
}

/// What [`ObjectBlobStore::import_local`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Files uploaded (and verified).
    pub copied: u64,
    /// Files that were in the bucket already (and verified).
    pub already_there: u64,
    /// Bytes of all files looked at.
    pub bytes: u64,
    /// Files that could not be copied, each with why (a local blob whose
    /// content does not match its name, a failed upload, a copy that reads
    /// back different).
    pub failed: Vec<String>,
}

/// A [`BlobStore`] on an S3-compatible bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    s3: Arc<AmazonS3>,
    prefix: String,
    bucket: String,
    endpoint: String,
    handle: tokio::runtime::Handle,
}

impl ObjectBlobStore {
    /// Builds the client (no request is sent: see [`ObjectBlobStore::check`]).
    /// Must be called inside a Tokio runtime, whose handle the synchronous
    /// methods use.
    pub fn open(settings: &ObjectStoreSettings) -> Result<ObjectBlobStore> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| MediaError::Remote("the S3 store must be opened inside a Tokio runtime".into()))?;
        if settings.bucket.trim().is_empty() {
            return Err(MediaError::option("bucket", "is required for the s3 media store"));
        }
        let prefix = settings.prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            Path::parse(&prefix).map_err(|e| MediaError::option("prefix", format!("{prefix:?}: {e}")))?;
        }
        // rustls with ring: harmless when the binary installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(settings.bucket.trim())
            .with_region(&settings.region)
            .with_disable_tagging(true)
            // A store that cannot be reached should say so within seconds,
            // not after the default three minutes of retries.
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(15), ..Default::default() })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        let endpoint = match settings.endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(e) => {
                b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                e.trim_end_matches('/').to_string()
            }
            None => format!("https://s3.{}.amazonaws.com", settings.region),
        };
        if let Some(k) = settings.access_key_id.as_deref().filter(|k| !k.is_empty()) {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = settings.secret_access_key.as_deref().filter(|s| !s.is_empty()) {
            b = b.with_secret_access_key(s);
        }
        let s3 = b.build().map_err(|e| MediaError::Remote(format!("configuring the S3 client: {e}")))?;
        Ok(ObjectBlobStore { s3: Arc::new(s3), prefix, bucket: settings.bucket.trim().to_string(), endpoint, handle })
    }

    /// `s3://bucket/prefix` (for messages and logs).
    pub fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The key of a file at `rel` (a path in the local layout, `/`-separated).
    fn key(&self, rel: &str) -> Path {
        if self.prefix.is_empty() { Path::from(rel) } else { Path::from(format!("{}/{rel}", self.prefix)) }
    }

    /// The object key of blob `hash`, as text (`prefix/ab/cd/hash`).
    pub fn blob_key(&self, hash: &str) -> Result<String> {
        validate_hash(hash)?;
        Ok(self.key(&blob_rel(hash)).to_string())
    }

    fn remote(&self, what: &str, e: object_store::Error) -> MediaError {
        MediaError::Remote(format!("{what} in {}: {e}", self.location()))
    }

    /// Sends one listing request: Ok when the bucket exists and the
    /// credentials may read it; else a sentence saying which is wrong.
    pub async fn check(&self) -> std::result::Result<(), String> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        match self.s3.list_with_delimiter(prefix.as_ref()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => {
                Err(format!("bucket {:?} does not exist at {}", self.bucket, self.endpoint))
            }
            Err(e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })) => {
                Err(format!("{} refused the credentials for bucket {:?}: {e}", self.endpoint, self.bucket))
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("NoSuchBucket") {
                    Err(format!("bucket {:?} does not exist at {}", self.bucket, self.endpoint))
                } else if text.contains("InvalidAccessKeyId")
                    || text.contains("SignatureDoesNotMatch")
                    || text.contains("AccessDenied")
                    || text.contains("403")
                {
                    Err(format!("{} refused the credentials for bucket {:?}: {text}", self.endpoint, self.bucket))
                } else {
                    Err(format!("{} cannot be reached for bucket {:?}: {text}", self.endpoint, self.bucket))
                }
            }
        }
    }

    async fn exists_key(&self, key: &Path) -> Result<Option<u64>> {
        match self.s3.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote(&format!("checking {key}"), e)),
        }
    }

    async fn read_key(&self, key: &Path, hash_for_not_found: &str) -> Result<Bytes> {
        let got = match self.s3.get(key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(MediaError::NotFound(hash_for_not_found.into())),
            Err(e) => return Err(self.remote(&format!("reading {key}"), e)),
        };
        got.bytes().await.map_err(|e| self.remote(&format!("reading {key}"), e))
    }

    async fn write_key(&self, key: &Path, bytes: Bytes) -> Result<()> {
        self.s3
            .put(key, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.remote(&format!("writing {key}"), e))
    }

    /// Stores `bytes` under their hash unless present (async form of [`BlobStore::put`]).
    pub async fn put_async(&self, bytes: Bytes) -> Result<StoredBlob> {
        let blob = describe(&bytes);
        let key = self.key(&blob_rel(&blob.hash));
        if self.exists_key(&key).await?.is_none() {
            self.write_key(&key, bytes).await?;
        }
        Ok(blob)
    }

    /// Blob `hash` as a stream of chunks with its length, for downloads
    /// that should not hold the whole file in memory.
    pub async fn stream(&self, hash: &str) -> Result<(u64, BoxStream<'static, std::io::Result<Bytes>>)> {
        validate_hash(hash)?;
        let key = self.key(&blob_rel(hash));
        let got = match self.s3.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Err(MediaError::NotFound(hash.into())),
            Err(e) => return Err(self.remote(&format!("reading {key}"), e)),
        };
        let len = got.meta.size;
        Ok((len, got.into_stream().map_err(std::io::Error::other).boxed()))
    }

    /// A URL that reads blob `hash` without credentials for `valid_for`.
    pub async fn presign(&self, hash: &str, valid_for: Duration) -> Result<String> {
        validate_hash(hash)?;
        let key = self.key(&blob_rel(hash));
        self.s3
            .signed_url(object_store::signer::Method::GET, &key, valid_for)
            .await
            .map(|u| u.to_string())
            .map_err(|e| self.remote(&format!("signing a URL for {key}"), e))
    }

    async fn cached_index(&self, rel: &str) -> Result<Option<StoredBlob>> {
        let key = self.key(rel);
        let text = match self.s3.get(&key).await {
            Ok(g) => g.bytes().await.map_err(|e| self.remote(&format!("reading {key}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote(&format!("reading {key}"), e)),
        };
        let Ok(blob) = serde_json::from_slice::<StoredBlob>(&text) else { return Ok(None) };
        // The index is only a hint: trust it only while the blob it names exists.
        if validate_hash(&blob.hash).is_err() {
            return Ok(None);
        }
        Ok(self.exists_key(&self.key(&blob_rel(&blob.hash))).await?.map(|_| blob))
    }

    async fn write_index(&self, rel: &str, blob: &StoredBlob) -> Result<()> {
        let json = serde_json::to_vec(blob).expect("StoredBlob always serialises");
        self.write_key(&self.key(rel), Bytes::from(json)).await
    }

    /// Copies a local store (the folder of a [`crate::MediaStore`]) into the
    /// bucket, blobs first, then the indexes of thumbnails and derived
    /// variants. Every local blob's content is hashed against its name
    /// before it is sent, and every copy (new or found already there) is
    /// read back and hashed, so a re-run checks everything again and copies
    /// only what is missing or wrong. `on_file(rel_path, bytes, outcome)` is
    /// called after each file (for progress); `total` gives the count and
    /// size first.
    pub async fn import_local(
        &self,
        root: &FsPath,
        total: impl FnOnce(u64, u64),
        mut on_file: impl FnMut(&str, u64, std::result::Result<ImportOutcome, &str>),
    ) -> Result<ImportReport> {
        let files = local_files(root)?;
        total(files.len() as u64, files.iter().map(|(_, n)| n).sum());
        let mut report = ImportReport::default();
        for (rel, size) in files {
            report.bytes += size;
            match self.import_one(root, &rel).await {
                Ok(outcome) => {
                    match outcome {
                        ImportOutcome::Copied => report.copied += 1,
                        ImportOutcome::AlreadyThere => report.already_there += 1,
                    }
                    on_file(&rel, size, Ok(outcome));
                }
                Err(why) => {
                    on_file(&rel, size, Err(&why));
                    report.failed.push(format!("{rel}: {why}"));
                }
            }
        }
        Ok(report)
    }

    async fn import_one(&self, root: &FsPath, rel: &str) -> std::result::Result<ImportOutcome, String> {
        let path = root.join(rel);
        let bytes = tokio::fs::read(&path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = rel.rsplit('/').next().unwrap_or_default();
        let is_blob = validate_hash(name).is_ok();
        let want = content_hash(&bytes);
        if is_blob && want != name {
            return Err(format!("the local file is damaged: its content hashes to {want}, not to its name"));
        }
        let key = self.key(rel);
        let already = match self.exists_key(&key).await.map_err(|e| e.to_string())? {
            Some(size) if size == bytes.len() as u64 => {
                let there = self.read_key(&key, name).await.map_err(|e| e.to_string())?;
                content_hash(&there) == want
            }
            _ => false,
        };
        if already {
            return Ok(ImportOutcome::AlreadyThere);
        }
        self.write_key(&key, Bytes::from(bytes)).await.map_err(|e| e.to_string())?;
        let back = self.read_key(&key, name).await.map_err(|e| e.to_string())?;
        let got = content_hash(&back);
        if got != want {
            return Err(format!("the copy in {} reads back as {got}, not {want}", self.location()));
        }
        Ok(ImportOutcome::Copied)
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }
}

/// A blob's path in the layout shared with the filesystem store.
fn blob_rel(hash: &str) -> String {
    format!("{}/{}/{hash}", &hash[0..2], &hash[2..4])
}

fn thumb_rel(hash: &str, max_side: u32) -> String {
    format!("thumbs/{}/{hash}-{max_side}.json", &hash[0..2])
}

fn derived_rel(hash: &str, variant: &str) -> String {
    format!("derived/{}/{hash}-{variant}.json", &hash[0..2])
}

/// Every file of a local store with its size, as `/`-separated paths
/// relative to `root`: blobs first, then the indexes (which name blobs),
/// temporary files left out.
fn local_files(root: &FsPath) -> Result<Vec<(String, u64)>> {
    fn walk(dir: &FsPath, rel: &str, out: &mut Vec<(String, u64)>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| MediaError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| MediaError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if rel.is_empty() && name == "tmp" {
                continue;
            }
            let meta = entry.metadata().map_err(|e| MediaError::io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                walk(&path, &child, out)?;
            } else if meta.is_file() {
                out.push((child, meta.len()));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    walk(root, "", &mut out)?;
    let index = |rel: &str| rel.starts_with("thumbs/") || rel.starts_with("derived/");
    out.sort_by(|a, b| (index(&a.0), &a.0).cmp(&(index(&b.0), &b.0)));
    Ok(out)
}

impl BlobStore for ObjectBlobStore {
    fn put(&self, bytes: &[u8], declared_mime: Option<&str>) -> Result<StoredBlob> {
        let blob = self.block(self.put_async(Bytes::copy_from_slice(bytes)))?;
        if let Some(declared) = declared_mime
            && !declared.eq_ignore_ascii_case(&blob.mime)
        {
            tracing::debug!(declared, detected = %blob.mime, hash = %blob.hash,
                "declared media type differs from content; using the detected one");
        }
        Ok(blob)
    }

    fn get(&self, hash: &str) -> Result<Vec<u8>> {
        validate_hash(hash)?;
        self.block(self.read_key(&self.key(&blob_rel(hash)), hash)).map(|b| b.to_vec())
    }

    fn exists(&self, hash: &str) -> Result<bool> {
        validate_hash(hash)?;
        self.block(self.exists_key(&self.key(&blob_rel(hash)))).map(|s| s.is_some())
    }

    fn thumbnail(&self, hash: &str, max_side: u32) -> Result<StoredBlob> {
        validate_hash(hash)?;
        if max_side == 0 {
            return Err(MediaError::option("max_side", "must be at least 1"));
        }
        let index = thumb_rel(hash, max_side);
        if let Some(cached) = self.block(self.cached_index(&index))? {
            return Ok(cached);
        }
        let bytes = self.get(hash)?;
        let img = decode::decode(&bytes, &DecodeLimits::default())?;
        let jpeg = ops::thumbnail(&img, &ThumbnailOptions { max_side, ..ThumbnailOptions::default() })?;
        let blob = self.put(&jpeg, Some("image/jpeg"))?;
        self.block(self.write_index(&index, &blob))?;
        Ok(blob)
    }

    fn derived(&self, hash: &str, variant: &str) -> Result<Option<StoredBlob>> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        self.block(self.cached_index(&derived_rel(hash, variant)))
    }

    fn put_derived(&self, hash: &str, variant: &str, bytes: &[u8]) -> Result<StoredBlob> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        let blob = self.put(bytes, None)?;
        self.block(self.write_index(&derived_rel(hash, variant), &blob))?;
        Ok(blob)
    }

    fn object_store(&self) -> Option<&ObjectBlobStore> {
        Some(self)
    }
}
