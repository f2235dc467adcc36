//! `station media migrate --to s3` and the media store's start-up and doctor
//! errors through the real binary, against a real S3 server (s3s-fs on
//! 127.0.0.1:0): every file copied and verified, a re-run copies only what
//! is missing, a damaged local blob is named and fails the run.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::path::Path;
use std::process::Command;

use sha2::Digest;
use station_media::{BlobStore, MediaStore};
use station_s3_fake::S3Fake;

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn station(vars: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn bucket_vars(fake: &S3Fake, bucket: &str) -> Vec<(String, String)> {
    vec![
        ("STATION_MEDIA_S3_BUCKET".into(), bucket.into()),
        ("STATION_MEDIA_S3_PREFIX".into(), "media".into()),
        ("STATION_MEDIA_S3_ENDPOINT".into(), fake.endpoint.clone()),
        ("STATION_MEDIA_S3_REGION".into(), station_s3_fake::REGION.into()),
        ("STATION_MEDIA_S3_ACCESS_KEY_ID".into(), station_s3_fake::ACCESS_KEY.into()),
        ("STATION_MEDIA_S3_SECRET_ACCESS_KEY".into(), station_s3_fake::SECRET_KEY.into()),
    ]
}

fn png(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([shade, (x * 7) as u8, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Every file of a local store (tmp/ left out) as `/`-separated relative paths.
fn local_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = vec![];
    walk(root, root, &mut out);
    out.retain(|f| !f.starts_with("tmp/"));
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_and_verifies_every_file_and_a_rerun_copies_only_what_is_missing() {
    let fake = S3Fake::start("bucket").await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = common::station_vars(&dir, "", None);
    vars.extend(bucket_vars(&fake, "bucket"));

    // A local store as a running Station leaves it: blobs, a thumbnail and
    // a fitted copy with their indexes.
    let media_dir = dir.path().join("data").join("media");
    let local = MediaStore::open(&media_dir).unwrap();
    let blobs: Vec<String> = (0..3).map(|i| local.put(&png(40, 20, i * 90), None).unwrap().hash).collect();
    local.thumbnail(&blobs[0], 16).unwrap();
    local.put_derived(&blobs[1], "fit-1000-10-none", &png(10, 5, 1)).unwrap();
    let files = local_files(&media_dir);
    assert_eq!(files.len(), 3 + 2 + 2, "{files:?}");

    let (code, text) = station(&vars, &["media", "migrate", "--to", "s3"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Copying 7 files"), "{text}");
    assert!(text.contains("7 copied, 0 already there, 0 failed"), "{text}");
    assert!(text.contains("media.store = \"s3\""), "{text}: says what to do next");
    let expected: Vec<String> = files.iter().map(|f| format!("media/{f}")).collect();
    assert_eq!(fake.keys(), expected);
    for hash in &blobs {
        let key = format!("media/{}/{}/{hash}", &hash[0..2], &hash[2..4]);
        let bytes = std::fs::read(fake.object_path(&key)).unwrap();
        assert_eq!(&hex::encode(sha2::Sha256::digest(&bytes)), hash);
    }

    // Again: everything verified, nothing copied.
    let (code, text) = station(&vars, &["media", "migrate", "--to", "s3"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("0 copied, 7 already there, 0 failed"), "{text}");

    // An object lost from the bucket is copied again, alone.
    let lost = format!("media/{}/{}/{}", &blobs[2][0..2], &blobs[2][2..4], blobs[2]);
    std::fs::remove_file(fake.object_path(&lost)).unwrap();
    let (code, text) = station(&vars, &["media", "migrate", "--to", "s3"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 copied, 6 already there, 0 failed"), "{text}");
    assert!(fake.object_path(&lost).exists());

    // A damaged local blob is named, not copied, and fails the run.
    let damaged = format!("{}/{}/{}", &blobs[1][0..2], &blobs[1][2..4], blobs[1]);
    std::fs::remove_file(fake.object_path(&format!("media/{damaged}"))).unwrap();
    std::fs::write(media_dir.join(&damaged), b"not what the name says").unwrap();
    let (code, text) = station(&vars, &["media", "migrate", "--to", "s3"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("{damaged}: the local file is damaged")), "{text}");
    assert!(text.contains("0 copied, 6 already there, 1 failed"), "{text}");
    assert!(!fake.object_path(&format!("media/{damaged}")).exists(), "a damaged file never reaches the bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_stops_commands_and_the_doctor_names_it() {
    let fake = S3Fake::start("bucket").await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = common::station_vars(&dir, "", None);
    vars.extend(bucket_vars(&fake, "no-such-bucket"));
    vars.push(("STATION_MEDIA_STORE".into(), "s3".into()));

    let (code, text) = station(&vars, &["migrate"]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("error: media store: bucket \"no-such-bucket\" does not exist at http://127.0.0.1:"),
        "{text}"
    );

    let (code, text) = station(&vars, &["doctor"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  media store: bucket \"no-such-bucket\" does not exist"), "{text}");
    assert!(text.contains("STATION_MEDIA_S3_BUCKET"), "{text}");

    let (code, text) = station(&vars, &["media", "migrate", "--to", "s3"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("does not exist"), "{text}");

    // Refused keys are told apart from a missing bucket.
    let mut wrong = common::station_vars(&dir, "", None);
    wrong.extend(bucket_vars(&fake, "bucket"));
    wrong.retain(|(k, _)| k != "STATION_MEDIA_S3_SECRET_ACCESS_KEY");
    wrong.push(("STATION_MEDIA_S3_SECRET_ACCESS_KEY".into(), "wrong".into()));
    wrong.push(("STATION_MEDIA_STORE".into(), "s3".into()));
    let (code, text) = station(&wrong, &["migrate"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("refused the credentials for bucket \"bucket\""), "{text}");

    // With the right bucket the same command works and the doctor agrees.
    let mut good = common::station_vars(&dir, "", None);
    good.extend(bucket_vars(&fake, "bucket"));
    good.push(("STATION_MEDIA_STORE".into(), "s3".into()));
    let (code, text) = station(&good, &["migrate"]);
    assert_eq!(code, 0, "{text}");
    let (_, text) = station(&good, &["doctor"]);
    assert!(text.contains("ok    media store: s3://bucket/media answers"), "{text}");
}
