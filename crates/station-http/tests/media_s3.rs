//! Media on S3-compatible object storage (issue 28 item 1), against a real
//! S3 server (s3s-fs) on 127.0.0.1:0 and real Station servers on one
//! database: two processes with separate local folders serve each other's
//! uploads, results, thumbnails and fitted copies; presigned redirects; and
//! the start-up and doctor errors for a missing bucket or refused keys.

mod common;

use common::{png, serve};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest;
use station_core::config::MediaStoreKind;
use station_core::doctor::Verdict;
use station_core::media::DeliveryLimits;
use station_core::{Config, Station};
use station_s3_fake::S3Fake;
use station_testkit::testing;

fn use_bucket(c: &mut Config, fake: &S3Fake, prefix: &str) {
    c.media.store = MediaStoreKind::S3;
    c.media.s3.bucket = fake.bucket.clone();
    c.media.s3.prefix = prefix.into();
    c.media.s3.endpoint = Some(fake.endpoint.clone());
    c.media.s3.region = station_s3_fake::REGION.into();
    c.media.s3.access_key_id = Some(station_s3_fake::ACCESS_KEY.into());
    c.media.s3.secret_access_key = Some(station_s3_fake::SECRET_KEY.into());
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn blob_key(prefix: &str, hash: &str) -> String {
    format!("{prefix}/{}/{}/{hash}", &hash[0..2], &hash[2..4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_separate_folders_serve_each_others_media_from_the_bucket() {
    for db in testing::all().await {
        let fake = S3Fake::start("media").await;
        // Process A runs the workers; process B only serves HTTP. Same
        // database, separate data folders, one bucket.
        let a = serve(&db, true, |c| use_bucket(c, &fake, "station/media")).await;
        let b = serve(&db, false, |c| use_bucket(c, &fake, "station/media")).await;
        let k = a.kind;

        // An upload through A is an object in the bucket, not a local file.
        let original = png(64, 32);
        let up = a.upload(&a.alice_key, original.clone(), "in.png").await;
        assert_eq!(up.status, StatusCode::CREATED, "{k}: {}", up.body);
        let upload_id = up.body["id"].as_str().unwrap().to_string();
        let upload_key = blob_key("station/media", &sha(&original));
        assert!(fake.keys().contains(&upload_key), "{k}: {:?}", fake.keys());
        assert!(!a.data_dir().join("media").exists(), "{k}: nothing is written to A's own folder");

        // B streams it (its own folder never had it), with its length.
        let r =
            b.http.get(b.url(&format!("/api/v1/media/{upload_id}"))).bearer_auth(&b.alice_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.headers()["content-type"], "image/png", "{k}");
        assert_eq!(r.headers()["content-length"], original.len().to_string().as_str(), "{k}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), original, "{k}");
        // Ownership still holds across processes.
        assert_eq!(b.get(&format!("/api/v1/media/{upload_id}"), &b.bob_key).await.status, StatusCode::NOT_FOUND);

        // A job run by A's workers stores its result in the bucket; B serves it.
        let job = a
            .post(
                "/api/v1/generations",
                &a.alice_key,
                json!({"tool": "resize", "params": {"image": format!("media:{upload_id}"), "width": 16}}),
            )
            .await;
        assert_eq!(job.status, StatusCode::CREATED, "{k}: {}", job.body);
        let done = a.wait(&a.alice_key, job.body["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{k}: {done}");
        let url = done["outputs"][0]["url"].as_str().unwrap().to_string();
        let result_id = done["outputs"][0]["media"]["id"].as_str().unwrap().to_string();
        let from_b = b.get_bytes(&url, &b.alice_key).await;
        assert_eq!(&from_b[1..4], b"PNG", "{k}");
        assert_eq!(from_b, a.get_bytes(&url, &a.alice_key).await, "{k}");
        assert!(fake.keys().contains(&blob_key("station/media", &sha(&from_b))), "{k}");

        // A thumbnail made by B is cached in the bucket (blob and index) and
        // A serves the same one without making it again.
        let thumb_path = format!("/api/v1/media/{result_id}/thumbnail?size=16");
        let thumb = b.get_bytes(&thumb_path, &b.alice_key).await;
        assert_eq!(&thumb[0..2], &[0xFF, 0xD8], "{k}: a JPEG");
        let keys = fake.keys();
        assert!(keys.iter().any(|key| key.starts_with("station/media/thumbs/") && key.ends_with("-16.json")), "{k}");
        assert_eq!(a.get_bytes(&thumb_path, &a.alice_key).await, thumb, "{k}");
        assert_eq!(fake.keys(), keys, "{k}: A found B's thumbnail instead of storing another");

        // A copy fitted to a platform's limits is cached there too: made by
        // A, found by B.
        let limits = DeliveryLimits { max_bytes: 10_000_000, max_side: 20, max_side_sum: None };
        let (fitted, _, changed) = a.station.deliverable(&upload_id, limits).await.unwrap();
        assert!(changed, "{k}: 64 px does not fit 20 px");
        let keys = fake.keys();
        assert!(keys.iter().any(|key| key.starts_with("station/media/derived/")), "{k}: {keys:?}");
        let (again, _, _) = b.station.deliverable(&upload_id, limits).await.unwrap();
        assert_eq!(again, fitted, "{k}");
        assert_eq!(fake.keys(), keys, "{k}: B used A's fitted copy");

        // Nothing of it reached either local folder.
        assert!(!a.data_dir().join("media").exists() && !b.data_dir().join("media").exists(), "{k}");
        b.stop().await;
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_redirect_to_presigned_urls_when_enabled() {
    let db = testing::sqlite().await;
    let fake = S3Fake::start("media").await;
    let s = serve(&db, false, |c| {
        use_bucket(c, &fake, "");
        c.media.presign_seconds = Some(120);
    })
    .await;
    let original = png(10, 10);
    let up = s.upload(&s.alice_key, original.clone(), "in.png").await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.body);
    let id = up.body["id"].as_str().unwrap();

    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(s.url(&format!("/api/v1/media/{id}"))).bearer_auth(&s.alice_key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&fake.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    // Still only for the owner.
    let r = no_redirects.get(s.url(&format!("/api/v1/media/{id}"))).bearer_auth(&s.bob_key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The URL reads the bytes without any credentials ...
    let r = no_redirects.get(&location).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), original);
    // ... and only as signed: a changed signature is refused.
    let (head, sig) = location.split_once("X-Amz-Signature=").unwrap();
    let first = if sig.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{first}{}", &sig[1..]);
    let r = no_redirects.get(format!("{head}X-Amz-Signature={flipped}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A client that follows redirects just gets the image.
    assert_eq!(s.get_bytes(&format!("/api/v1/media/{id}"), &s.alice_key).await, original);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_refused_keys_stop_start_up_and_show_in_the_doctor() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = S3Fake::start("media").await;
    let dir = tempfile::tempdir().unwrap();
    let config = |bucket: &str, secret: &str| {
        let mut c = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        use_bucket(&mut c, &fake, "p");
        c.media.s3.bucket = bucket.into();
        c.media.s3.secret_access_key = Some(secret.into());
        c
    };

    let err = Station::open(config("no-such-bucket", station_s3_fake::SECRET_KEY)).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("bucket \"no-such-bucket\" does not exist at http://127.0.0.1:"), "{text}");

    let err = Station::open(config("media", "wrong-secret")).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("refused the credentials for bucket \"media\""), "{text}");

    // The doctor opens without the check and reports it, with what to do.
    let (station, _) =
        Station::open_without_media_check(config("no-such-bucket", station_s3_fake::SECRET_KEY)).await.unwrap();
    let checks = station.doctor(&[]).await;
    let media = checks.iter().find(|c| c.subject == "media store").expect("a media store check");
    assert_eq!(media.verdict, Verdict::Fail, "{media:?}");
    assert!(media.detail.contains("does not exist"), "{media:?}");
    assert!(media.fix.as_deref().unwrap().contains("STATION_MEDIA_S3_BUCKET"), "{media:?}");
    station.shutdown().await;

    // With the right bucket and keys it opens and the doctor says so.
    let (station, _) = Station::open(config("media", station_s3_fake::SECRET_KEY)).await.unwrap();
    let checks = station.doctor(&[]).await;
    let media = checks.iter().find(|c| c.subject == "media store").unwrap();
    assert_eq!((media.verdict, media.detail.as_str()), (Verdict::Ok, "s3://media/p answers"));
    station.shutdown().await;
}
