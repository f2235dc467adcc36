//! Content-addressed blob storage.
//!
//! A blob's name is the sha256 of its bytes, so storing the same content twice is a
//! no-op and a blob can never change under its name. The filesystem layout is
//! `dir/ab/cd/<hash>` (first two byte pairs of the hash as folders, keeping folder
//! sizes sane), temporary files in `dir/tmp`, the thumbnail index in
//! `dir/thumbs/ab/<hash>-<max_side>.json` and the index of other derived
//! variants (e.g. a result fitted to a chat platform's limits) in
//! `dir/derived/ab/<hash>-<variant>.json`.
//!
//! Ownership, media ids and other metadata belong to the database, not here.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decode::{self, DecodeLimits};
use crate::error::{MediaError, Result};
use crate::ops::{self, ThumbnailOptions};

/// What the store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// Lowercase hex sha256 of the content; also its name in the store.
    pub hash: String,
    /// Media type detected from the content (never from a name or a declared type).
    pub mime: String,
    /// Size in bytes.
    pub size: u64,
    /// Pixel width, for images whose header could be read.
    pub width: Option<u32>,
    /// Pixel height, for images whose header could be read.
    pub height: Option<u32>,
}

/// A store of immutable blobs named by their sha256. Implemented for the local
/// filesystem by [`MediaStore`] and for S3-compatible object storage by
/// [`crate::object::ObjectBlobStore`]. Synchronous: call it on the blocking pool.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` (no-op if already present) and describes them. `declared_mime`
    /// is only compared with the detected type for logging; it is never trusted.
    fn put(&self, bytes: &[u8], declared_mime: Option<&str>) -> Result<StoredBlob>;
    /// The blob's bytes; [`MediaError::NotFound`] if absent.
    fn get(&self, hash: &str) -> Result<Vec<u8>>;
    /// Whether the blob is stored.
    fn exists(&self, hash: &str) -> Result<bool>;
    /// A JPEG thumbnail of an image blob with its longest side at most `max_side`,
    /// itself stored as a blob; repeated calls return the cached one.
    fn thumbnail(&self, hash: &str, max_side: u32) -> Result<StoredBlob>;
    /// The blob stored as `variant` of blob `hash` by [`BlobStore::put_derived`],
    /// if any. The default remembers nothing.
    fn derived(&self, hash: &str, variant: &str) -> Result<Option<StoredBlob>> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        Ok(None)
    }
    /// Stores `bytes` as the `variant` of blob `hash` (a name of lowercase
    /// letters, digits and `-`, e.g. `fit-10000000-10000-10000`) so
    /// [`BlobStore::derived`] finds it next time. The default only stores it.
    fn put_derived(&self, hash: &str, variant: &str, bytes: &[u8]) -> Result<StoredBlob> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        self.put(bytes, None)
    }
    /// The S3-compatible store this is, if it is one: streamed downloads and
    /// presigned URLs use its async methods. The default: none.
    fn object_store(&self) -> Option<&crate::object::ObjectBlobStore> {
        None
    }
    /// The file holding blob `hash`, for a store on the local filesystem
    /// (streamed downloads). The default: none.
    fn local_path(&self, hash: &str) -> Option<PathBuf> {
        let _ = hash;
        None
    }
}

/// Refuses variant names that are empty, longer than 100 characters or hold
/// anything but lowercase letters, digits and `-` (they become file names).
pub fn validate_variant(variant: &str) -> Result<()> {
    if !variant.is_empty()
        && variant.len() <= 100
        && variant.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        Ok(())
    } else {
        Err(MediaError::option("variant", format!("{variant:?} must be 1-100 of a-z, 0-9 and -")))
    }
}

/// sha256 of `bytes` as lowercase hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Refuses anything but 64 lowercase hex digits, which also rules out path tricks
/// such as `../` before a hash is ever joined to a path.
pub fn validate_hash(hash: &str) -> Result<()> {
    if hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(MediaError::InvalidHash(hash.to_string()))
    }
}

/// Describes content: the image header if it parses, else a few well-known magic
/// numbers, else `application/octet-stream`.
pub fn describe(bytes: &[u8]) -> StoredBlob {
    let (mime, width, height) = match decode::probe(bytes) {
        Ok(info) => (info.format.mime(), Some(info.width), Some(info.height)),
        Err(_) => (sniff_other(bytes), None, None),
    };
    StoredBlob { hash: content_hash(bytes), mime: mime.to_string(), size: bytes.len() as u64, width, height }
}

fn sniff_other(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"%PDF-") {
        "application/pdf"
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        "video/mp4"
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        "video/webm"
    } else {
        "application/octet-stream"
    }
}

/// Filesystem [`BlobStore`]. Cheap to clone; safe to share between threads and
/// processes because every write is a rename of a complete temporary file.
#[derive(Debug, Clone)]
pub struct MediaStore {
    root: PathBuf,
}

impl MediaStore {
    /// Opens (creating if needed) a store rooted at `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<MediaStore> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["tmp", "thumbs", "derived"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| MediaError::io(format!("creating {}", p.display()), e))?;
        }
        Ok(MediaStore { root })
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn path(&self, hash: &str) -> Result<PathBuf> {
        validate_hash(hash)?;
        Ok(self.root.join(&hash[0..2]).join(&hash[2..4]).join(hash))
    }

    fn thumb_index_path(&self, hash: &str, max_side: u32) -> PathBuf {
        self.root.join("thumbs").join(&hash[0..2]).join(format!("{hash}-{max_side}.json"))
    }

    /// Writes via a temporary file in the same filesystem and renames it into
    /// place, so readers never see a partial file even if we crash mid-write.
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let parent = dest.parent().expect("blob paths always have a parent");
        fs::create_dir_all(parent).map_err(|e| MediaError::io(format!("creating {}", parent.display()), e))?;
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| MediaError::io(format!("creating a temp file in {}", tmp_dir.display()), e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| MediaError::io(format!("writing {}", tmp.path().display()), e))?;
        tmp.persist(dest).map_err(|e| MediaError::io(format!("renaming into {}", dest.display()), e.error))?;
        Ok(())
    }

    fn derived_index_path(&self, hash: &str, variant: &str) -> PathBuf {
        self.root.join("derived").join(&hash[0..2]).join(format!("{hash}-{variant}.json"))
    }

    fn read_cached_thumb(&self, index: &Path) -> Option<StoredBlob> {
        let text = fs::read(index).ok()?;
        let blob: StoredBlob = serde_json::from_slice(&text).ok()?;
        // The index is only a hint: trust it only while the blob it names exists.
        match self.exists(&blob.hash) {
            Ok(true) => Some(blob),
            _ => None,
        }
    }
}

impl BlobStore for MediaStore {
    fn put(&self, bytes: &[u8], declared_mime: Option<&str>) -> Result<StoredBlob> {
        let blob = describe(bytes);
        if let Some(declared) = declared_mime
            && !declared.eq_ignore_ascii_case(&blob.mime)
        {
            tracing::debug!(declared, detected = %blob.mime, hash = %blob.hash,
                "declared media type differs from content; using the detected one");
        }
        let path = self.path(&blob.hash)?;
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(blob)
    }

    fn get(&self, hash: &str) -> Result<Vec<u8>> {
        let path = self.path(hash)?;
        fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => MediaError::NotFound(hash.to_string()),
            _ => MediaError::io(format!("reading {}", path.display()), e),
        })
    }

    fn exists(&self, hash: &str) -> Result<bool> {
        let path = self.path(hash)?;
        path.try_exists().map_err(|e| MediaError::io(format!("checking {}", path.display()), e))
    }

    fn thumbnail(&self, hash: &str, max_side: u32) -> Result<StoredBlob> {
        validate_hash(hash)?;
        if max_side == 0 {
            return Err(MediaError::option("max_side", "must be at least 1"));
        }
        let index = self.thumb_index_path(hash, max_side);
        if let Some(cached) = self.read_cached_thumb(&index) {
            return Ok(cached);
        }
        let bytes = self.get(hash)?;
        let img = decode::decode(&bytes, &DecodeLimits::default())?;
        let jpeg = ops::thumbnail(&img, &ThumbnailOptions { max_side, ..ThumbnailOptions::default() })?;
        let blob = self.put(&jpeg, Some("image/jpeg"))?;
        let json = serde_json::to_vec(&blob).expect("StoredBlob always serialises");
        self.write_atomic(&index, &json)?;
        Ok(blob)
    }

    fn derived(&self, hash: &str, variant: &str) -> Result<Option<StoredBlob>> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        Ok(self.read_cached_thumb(&self.derived_index_path(hash, variant)))
    }

    fn put_derived(&self, hash: &str, variant: &str, bytes: &[u8]) -> Result<StoredBlob> {
        validate_hash(hash)?;
        validate_variant(variant)?;
        let blob = self.put(bytes, None)?;
        let json = serde_json::to_vec(&blob).expect("StoredBlob always serialises");
        self.write_atomic(&self.derived_index_path(hash, variant), &json)?;
        Ok(blob)
    }

    fn local_path(&self, hash: &str) -> Option<PathBuf> {
        self.path(hash).ok()
    }
}
