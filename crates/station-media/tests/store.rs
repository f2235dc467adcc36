//! The content-addressed blob store: deduplication, derived blobs, thumbnails, bad hashes.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use station_media::store::content_hash;
use station_media::{BlobStore, MediaError, MediaStore, probe};

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn put_is_content_addressed_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    let bytes = png(&solid(30, 20, [1, 2, 3]));
    let a = store.put(&bytes, Some("image/png")).unwrap();
    let b = store.put(&bytes, None).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.hash, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(a.hash, content_hash(&bytes));
    assert_eq!((a.size, a.width, a.height), (bytes.len() as u64, Some(30), Some(20)));
    let path = store.path(&a.hash).unwrap();
    assert_eq!(path, dir.path().join(&a.hash[..2]).join(&a.hash[2..4]).join(&a.hash));
    assert_eq!(store.get(&a.hash).unwrap(), bytes);
    assert!(store.exists(&a.hash).unwrap());
    // exactly one blob file, and no temp leftovers
    let blobs: Vec<_> = files_under(dir.path());
    assert_eq!(blobs, vec![path]);
}

#[test]
fn mime_is_detected_from_content_not_the_declared_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    // PNG bytes uploaded as "photo.jpg"
    let blob = store.put(&png(&solid(4, 4, [9, 9, 9])), Some("image/jpeg")).unwrap();
    assert_eq!(blob.mime, "image/png");
    let other = store.put(b"just some text", Some("image/png")).unwrap();
    assert_eq!(other.mime, "application/octet-stream");
    assert_eq!((other.width, other.height), (None, None));
}

#[test]
fn bad_and_missing_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    for bad in ["../../etc/passwd", "abc", &"A".repeat(64)] {
        assert!(matches!(store.get(bad), Err(MediaError::InvalidHash(_))), "{bad}");
        assert!(matches!(store.path(bad), Err(MediaError::InvalidHash(_))), "{bad}");
    }
    let missing = content_hash(b"never stored");
    assert!(matches!(store.get(&missing), Err(MediaError::NotFound(h)) if h == missing));
    assert!(!store.exists(&missing).unwrap());
}

#[test]
fn thumbnails_are_blobs_and_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    let original = store.put(&png(&stripes(1000, 500, &[[255, 0, 0], [0, 0, 255]])), None).unwrap();
    let thumb = store.thumbnail(&original.hash, 200).unwrap();
    assert_eq!(thumb.mime, "image/jpeg");
    assert_eq!((thumb.width, thumb.height), (Some(200), Some(100)));
    let bytes = store.get(&thumb.hash).unwrap();
    assert_eq!(content_hash(&bytes), thumb.hash);
    assert_eq!(probe(&bytes).unwrap().width, 200);

    // A different size is a different thumbnail.
    let other = store.thumbnail(&original.hash, 64).unwrap();
    assert_ne!(other.hash, thumb.hash);
    assert_eq!(other.width, Some(64));

    // With the original gone, only the cache can answer: proves reuse.
    std::fs::remove_file(store.path(&original.hash).unwrap()).unwrap();
    assert_eq!(store.thumbnail(&original.hash, 200).unwrap(), thumb);
    // A stale index entry whose blob vanished is not trusted.
    std::fs::remove_file(store.path(&other.hash).unwrap()).unwrap();
    assert!(matches!(store.thumbnail(&original.hash, 64), Err(MediaError::NotFound(_))));
}

#[test]
fn thumbnail_of_a_non_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    let blob = store.put(b"%PDF-1.7 not an image", None).unwrap();
    assert_eq!(blob.mime, "application/pdf");
    assert!(matches!(store.thumbnail(&blob.hash, 100), Err(MediaError::UnsupportedFormat(_))));
}

#[test]
fn concurrent_puts_of_the_same_content_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = MediaStore::open(dir.path()).unwrap();
    let bytes = png(&noise(64, 64, 8));
    let hashes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| store.put(&bytes, None).unwrap().hash)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.get(&hashes[0]).unwrap(), bytes);
    assert_eq!(files_under(dir.path()).len(), 1, "duplicates or temp files left");
}
