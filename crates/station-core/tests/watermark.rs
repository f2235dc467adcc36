//! The operator's automatic watermark on job results, the per-account opt-out,
//! and results fitted for delivery. Jobs run through the real core and media
//! workers; every case runs on SQLite and, when configured, on PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use station_core::watermark::WatermarkError;
use station_core::{Config, MediaExecutor, Station, SubmitRequest, Workers};
use station_media::image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};
use station_media::ops::{DeliveryLimits, Position};
use station_store::testing::{self, TestDb};
use station_store::{AccountRow, JobRow, JobStatus};

const BLUE: [u8; 4] = [0, 0, 255, 255];
const RED: [u8; 4] = [255, 0, 0, 255];

struct Env {
    station: Station,
    workers: Workers,
    account: AccountRow,
    _dir: tempfile::TempDir,
}

/// A Station on `db` with media workers; `tweak` sets the media config.
/// `logo` is an opaque red 8×8 PNG configured as watermark "logo".
async fn setup(db: &TestDb, tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.media_dir = Some(dir.path().join("media"));
    config.queue.poll_ms = 50;
    config.media.workers = 2;
    let logo = dir.path().join("logo.png");
    std::fs::write(&logo, png(&solid(8, 8, RED))).unwrap();
    config.media.watermarks.insert("logo".into(), logo);
    tweak(&mut config);
    let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    station.register_executor(Arc::new(MediaExecutor::new(&config)));
    let workers = Workers::start(&station);
    let account = station.account("local", "wm", "Watermark tester").await.unwrap();
    Env { station, workers, account, _dir: dir }
}

/// The automatic watermark as the cases use it: the red logo, a quarter of
/// the width, fully opaque, in the bottom-right corner with no margin.
fn auto_logo(c: &mut Config) {
    c.media.auto_watermark = Some("logo".into());
    c.media.auto_watermark_position = Position::BottomRight;
    c.media.auto_watermark_opacity = 1.0;
    c.media.auto_watermark_scale = 0.25;
    c.media.auto_watermark_margin = 0;
}

fn solid(w: u32, h: u32, px: [u8; 4]) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_pixel(w, h, Rgba(px)))
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Rotates a 40×40 blue PNG by 180° (a media tool whose output, unmarked, is
/// the same blue square) and returns the finished job and its output bytes.
async fn rotate_blue(env: &Env) -> (JobRow, Vec<u8>) {
    let input = env.station.media.put_image(png(&solid(40, 40, BLUE)), Some(&env.account.id), None, "input").await;
    let params = json!({"image": format!("media:{}", input.unwrap().id), "degrees": "180"});
    let params = params.as_object().unwrap().clone();
    let job = env.station.submit(&env.account, SubmitRequest { tool: "rotate".into(), params, ..Default::default() });
    let job = job.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let row = env.station.job(&job.id).await.unwrap().unwrap();
        if row.status().is_terminal() {
            break row;
        }
        assert!(Instant::now() < deadline, "job stuck in {}", row.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.status(), JobStatus::Succeeded, "{:?}", job.error);
    let ids = job.output_ids();
    assert_eq!(ids.len(), 1);
    let (_, bytes) = env.station.media.get(&ids[0], Some(&env.account)).await.unwrap();
    (job, bytes)
}

/// Asserts the 40×40 output is blue with the 10×10 red mark exactly in the
/// bottom-right corner (mark width = 0.25 × 40).
fn assert_marked_bottom_right(bytes: &[u8]) {
    let img = station_media::image::load_from_memory(bytes).unwrap();
    assert_eq!(img.dimensions(), (40, 40));
    let rgba = img.to_rgba8();
    for (x, y, p) in rgba.enumerate_pixels() {
        let in_mark = x >= 30 && y >= 30;
        let want = if in_mark { RED } else { BLUE };
        assert_eq!(p.0, want, "pixel ({x}, {y}) {}", if in_mark { "inside the mark" } else { "outside the mark" });
    }
}

fn assert_plain_blue(bytes: &[u8]) {
    let img = station_media::image::load_from_memory(bytes).unwrap();
    assert_eq!(img.dimensions(), (40, 40));
    assert!(img.to_rgba8().pixels().all(|p| p.0 == BLUE), "no watermark expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_get_the_operator_watermark_unless_the_account_opted_out() {
    for db in testing::all().await {
        // Reference: the same job on a Station without an automatic watermark.
        let plain_env = setup(&db, |_| {}).await;
        let (_, plain) = rotate_blue(&plain_env).await;
        assert_plain_blue(&plain);
        plain_env.workers.shutdown().await;

        let env = setup(&db, auto_logo).await;
        let (job, marked) = rotate_blue(&env).await;
        assert_marked_bottom_right(&marked);
        // What is stored as the job's output is the watermarked image.
        let row = env.station.media.row(&job.output_ids()[0], None).await.unwrap();
        assert_eq!((row.width, row.height, row.mime.as_str()), (40, 40, "image/png"), "{}", db.kind);

        // Opted out (the operator allows it by default): identical to no watermark.
        assert!(!env.station.watermark_opt_out(&env.account.id).await.unwrap());
        env.station.set_watermark_opt_out(&env.account, true).await.unwrap();
        assert!(env.station.watermark_opt_out(&env.account.id).await.unwrap());
        let (_, opted_out) = rotate_blue(&env).await;
        assert_eq!(opted_out, plain, "{}: an opted-out result is byte-identical to an unmarked one", db.kind);

        // Opting back in brings the mark back.
        env.station.set_watermark_opt_out(&env.account, false).await.unwrap();
        let (_, again) = rotate_blue(&env).await;
        assert_marked_bottom_right(&again);
        env.workers.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opting_out_is_refused_when_the_operator_does_not_allow_it() {
    for db in testing::all().await {
        // Opted out while the operator allowed it...
        let allowed = setup(&db, auto_logo).await;
        allowed.station.set_watermark_opt_out(&allowed.account, true).await.unwrap();
        allowed.workers.shutdown().await;
        // ...then the operator turned opt-outs off: the old choice is not honoured.
        let env = setup(&db, |c| {
            auto_logo(c);
            c.media.watermark_opt_out = false;
        })
        .await;
        let err = env.station.set_watermark_opt_out(&env.account, true).await.unwrap_err();
        assert!(matches!(err, WatermarkError::OptOutNotAllowed), "{}: {err}", db.kind);
        let msg = err.to_string();
        assert!(msg.contains("watermark_opt_out") && msg.contains("operator"), "{msg}");
        let (_, bytes) = rotate_blue(&env).await;
        assert_marked_bottom_right(&bytes);
        // Opting back in is always allowed.
        env.station.set_watermark_opt_out(&env.account, false).await.unwrap();
        assert!(!env.station.watermark_opt_out(&env.account.id).await.unwrap());
        env.workers.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_tool_itself_is_not_marked_twice() {
    let db = testing::sqlite().await;
    let env = setup(&db, auto_logo).await;
    let input = env.station.media.put_image(png(&solid(40, 40, BLUE)), Some(&env.account.id), None, "input").await;
    let params = json!({"image": format!("media:{}", input.unwrap().id), "text": "hi", "position": "top-left",
        "opacity": 1.0, "scale": 0.5, "margin": 0});
    let params = params.as_object().unwrap().clone();
    let req = SubmitRequest { tool: "watermark".into(), params, ..Default::default() };
    let job = env.station.submit(&env.account, req).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let row = env.station.job(&job.id).await.unwrap().unwrap();
        if row.status().is_terminal() {
            break row;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.status(), JobStatus::Succeeded, "{:?}", job.error);
    let (_, bytes) = env.station.media.get(&job.output_ids()[0], None).await.unwrap();
    let img = station_media::image::load_from_memory(&bytes).unwrap().to_rgba8();
    assert_eq!(img.get_pixel(39, 39).0, BLUE, "no automatic red mark on the watermark tool's result");
    env.workers.shutdown().await;
}

/// A change to the configuration under test.
type Tweak = Box<dyn Fn(&mut Config)>;

#[tokio::test]
async fn unusable_watermark_settings_stop_start_up_with_the_setting_named() {
    let db = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let base = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    let cases: Vec<(Tweak, &str)> = vec![
        (Box::new(|c| c.media.auto_watermark = Some("nope".into())), "no watermark named \"nope\""),
        (Box::new(|c| c.media.auto_watermark = Some("text:  ".into())), "is empty"),
        (
            Box::new(|c| {
                c.media.auto_watermark = Some("text:hi".into());
                c.media.auto_watermark_opacity = 1.5;
            }),
            "media.auto_watermark_opacity",
        ),
        (
            Box::new(|c| {
                c.media.watermarks.insert("gone".into(), Path::new("/nonexistent/logo.png").into());
                c.media.auto_watermark = Some("gone".into());
            }),
            "media.watermarks.gone: cannot read",
        ),
    ];
    for (tweak, want) in cases {
        let mut config = base.clone();
        tweak(&mut config);
        let err = Station::with_store(config, db.store.clone()).err().expect("refused").to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // A text watermark needs no file.
    let mut ok = base.clone();
    ok.media.auto_watermark = Some("text:Made with Station".into());
    assert!(Station::with_store(ok, db.store.clone()).is_ok());
}

#[tokio::test]
async fn deliverable_fits_the_limits_and_caches_the_variant() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            media_dir: Some(dir.path().join("media")),
            ..Default::default()
        };
        let (station, _) = Station::with_store(config, db.store.clone()).unwrap();
        // Noise so the PNG is large and incompressible.
        let mut seed = 7u32;
        let big = DynamicImage::ImageRgba8(RgbaImage::from_fn(300, 200, |_, _| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let b = seed.to_le_bytes();
            Rgba([b[1], b[2], b[3], 255])
        }));
        let original = png(&big);
        let row = station.media.put_image(original.clone(), None, None, "output").await.unwrap();
        let limits = DeliveryLimits { max_bytes: 40_000, max_side: 120, max_side_sum: None };
        let (bytes, mime, changed) = station.deliverable(&row.id, limits).await.unwrap();
        assert!(changed, "{}", db.kind);
        assert!(bytes.len() <= 40_000, "{} bytes", bytes.len());
        let img = station_media::image::load_from_memory(&bytes).unwrap();
        let (w, h) = img.dimensions();
        assert!(w <= 120 && h <= 120 && w >= 60, "{w}×{h}");
        assert_eq!(mime, station_media::store::describe(&bytes).mime);
        // Cached as a derived blob: one index file, and the same bytes next time.
        let index: Vec<_> = walk(&dir.path().join("media/derived"));
        assert_eq!(index.len(), 1, "{index:?}");
        let again = station.deliverable(&row.id, limits).await.unwrap();
        assert_eq!(again, (bytes.clone(), mime.clone(), true));
        // The original is still stored, unchanged.
        assert_eq!(station.media.get(&row.id, None).await.unwrap().1, original);
        // An image within the limits comes back as stored.
        let roomy = DeliveryLimits { max_bytes: 10_000_000, max_side: 10_000, max_side_sum: Some(10_000) };
        assert_eq!(station.deliverable(&row.id, roomy).await.unwrap(), (original, "image/png".to_string(), false));
        assert!(station.deliverable("no-such-media", limits).await.is_err());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
