//! Native media tools end to end: submit through the real core, let the real
//! workers run them through `MediaExecutor`, and check the stored outputs'
//! pixels. Runs on SQLite always and on PostgreSQL when one is configured.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use station_core::{
    Config, ExecContext, ExecError, ExecJob, Executor, InputImage, JobEvent, MediaExecutor, Station, SubmitRequest,
    Workers,
};
use station_media::image::{DynamicImage, GenericImageView, ImageFormat, Rgba, RgbaImage};
use station_store::testing::{self, TestDb};
use station_store::{AccountRow, JobRow, JobStatus, MediaRow};
use tokio_util::sync::CancellationToken;

const RED: [u8; 4] = [255, 0, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];
const BLACK: [u8; 4] = [0, 0, 0, 255];

/// A running Station with media workers and one account.
struct Env {
    station: Station,
    workers: Option<Workers>,
    account: AccountRow,
    db: TestDb,
    dir: tempfile::TempDir,
}

impl Env {
    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown().await;
        }
    }
}

/// The media built-ins, installed as tool files: they must load and validate
/// through the same loader the server uses.
fn install_media_tools(tools_dir: &Path) -> Vec<String> {
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../station-tools/builtin");
    std::fs::create_dir_all(tools_dir).unwrap();
    let mut ids = vec![];
    for entry in std::fs::read_dir(&builtin).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["service"] == "media" {
            ids.push(v["id"].as_str().unwrap().to_string());
            std::fs::write(tools_dir.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    // Operations without a built-in (blur, invert) through operator-written tools.
    let image = json!({"type": "image", "required": true, "primary": true});
    for (id, op, extra) in [
        ("soften", "blur", json!({"sigma": {"type": "number", "default": 2.0, "min": 0.1, "max": 100}})),
        ("negative", "invert", json!({})),
        // Mis-authored tools: the error must name the input at fault.
        ("mirror-number", "flip", json!({"direction": {"type": "integer", "default": 1}})),
        (
            "mirror-extra",
            "flip",
            json!({"direction": {"type": "enum", "choices": ["vertical"], "default": "vertical"},
                "speed": {"type": "integer", "default": 3}}),
        ),
    ] {
        let mut inputs = Map::new();
        inputs.insert("image".into(), image.clone());
        inputs.extend(extra.as_object().unwrap().clone());
        let tool = json!({"id": id, "name": id, "category": "utility", "service": "media",
            "inputs": inputs, "cost": {"per_run": 1}, "media": {"operation": op}});
        std::fs::write(tools_dir.join(format!("{id}.json")), tool.to_string()).unwrap();
    }
    ids.sort();
    ids
}

async fn setup_with(db: TestDb, start_workers: bool, tweak: impl FnOnce(&mut Config, &Path)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.media_dir = Some(dir.path().join("media"));
    config.queue.poll_ms = 50;
    config.media.workers = 2;
    tweak(&mut config, dir.path());
    let ids = install_media_tools(&config.tools_dir());
    assert_eq!(
        ids,
        ["convert", "crop", "flip", "resize", "rotate", "strip-metadata", "thumbnail", "watermark"],
        "media built-ins"
    );
    let (station, errors) = Station::with_store(config.clone(), db.store.clone()).unwrap();
    assert!(errors.is_empty(), "tool files failed to load: {errors:?}");
    station.register_executor(Arc::new(MediaExecutor::new(&config)));
    let workers = start_workers.then(|| Workers::start(&station));
    let account = station.account("local", "tester", "Tester").await.unwrap();
    Env { station, workers, account, db, dir }
}

async fn setup(db: TestDb) -> Env {
    setup_with(db, true, |_, _| {}).await
}

fn image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| Rgba(f(x, y))))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(img.to_rgb8()).write_to(&mut out, format).unwrap(),
        _ => img.write_to(&mut out, format).unwrap(),
    }
    out.into_inner()
}

fn png(img: &DynamicImage) -> Vec<u8> {
    encode(img, ImageFormat::Png)
}

/// Left half red, right half blue.
fn halves(w: u32, h: u32) -> DynamicImage {
    image(w, h, |x, _| if x < w / 2 { RED } else { BLUE })
}

/// Every pixel distinct: (8x, 8y, 0).
fn gradient(w: u32, h: u32) -> DynamicImage {
    image(w, h, |x, y| [(x * 8) as u8, (y * 8) as u8, 0, 255])
}

/// One red pixel at the top-left, the rest black.
fn marker(w: u32, h: u32) -> DynamicImage {
    image(w, h, |x, y| if (x, y) == (0, 0) { RED } else { BLACK })
}

async fn upload(env: &Env, bytes: Vec<u8>) -> String {
    env.station.media.put_image(bytes, Some(&env.account.id), None, "input").await.unwrap().id
}

/// Stores bytes as the account's media without the upload checks, as if they
/// had been accepted under older limits: the executor must still refuse them.
async fn insert_raw(env: &Env, bytes: &[u8]) -> String {
    let blob = env.station.media.blobs().put(bytes, None).unwrap();
    let row = MediaRow {
        id: station_core::media::new_media_id(),
        hash: blob.hash,
        mime: blob.mime,
        size: bytes.len() as i64,
        width: blob.width.unwrap_or(0) as i64,
        height: blob.height.unwrap_or(0) as i64,
        account_id: Some(env.account.id.clone()),
        job_id: None,
        kind: "input".into(),
        created_at: station_store::now_ms(),
    };
    env.db.store.insert_media(&row).await.unwrap();
    row.id
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn submit(env: &Env, tool: &str, p: Value) -> JobRow {
    let req = SubmitRequest { tool: tool.into(), params: params(p), ..Default::default() };
    env.station.submit(&env.account, req).await.unwrap_or_else(|e| panic!("{tool}: {e}"))
}

async fn wait(env: &Env, job_id: &str) -> JobRow {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = env.station.job(job_id).await.unwrap().unwrap();
        if matches!(job.status(), JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {job_id} stuck in {}", job.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(env: &Env, tool: &str, p: Value) -> JobRow {
    let job = submit(env, tool, p).await;
    wait(env, &job.id).await
}

/// Runs a tool that must succeed; returns its single output's record and pixels.
async fn run_ok(env: &Env, tool: &str, p: Value) -> (MediaRow, Vec<u8>, DynamicImage) {
    let job = run(env, tool, p).await;
    assert_eq!(job.status(), JobStatus::Succeeded, "{tool} on {}: {:?}", env.db.kind, job.error);
    let outputs = job.output_ids();
    assert_eq!(outputs.len(), 1, "{tool}: one output");
    let (row, bytes) = env.station.media.get(&outputs[0], None).await.unwrap();
    assert_eq!(row.account_id.as_deref(), Some(env.account.id.as_str()));
    assert_eq!(row.job_id.as_deref(), Some(job.id.as_str()));
    let img = station_media::decode(&bytes, &Default::default()).unwrap();
    assert_eq!((row.width as u32, row.height as u32), img.dimensions());
    (row, bytes, img)
}

/// The account's job rows.
async fn job_rows(env: &Env) -> usize {
    let f = station_store::JobFilter { account_id: Some(env.account.id.clone()), limit: 1000, ..Default::default() };
    env.db.store.list_jobs(&f).await.unwrap().len()
}

/// Submits a request that must be refused before queuing (issue 17, item
/// 9: the tool's rules and the operation's own check run at submit): no job
/// row is written. Returns the problems as `field: reason`, one per line.
async fn refused(env: &Env, tool: &str, p: Value) -> String {
    let before = job_rows(env).await;
    let req = SubmitRequest { tool: tool.into(), params: params(p), ..Default::default() };
    let err = env.station.submit(&env.account, req).await.expect_err("refused at submit");
    let station_core::SubmitError::Invalid(fields) = err else { panic!("{tool}: expected invalid input, got {err}") };
    assert_eq!(job_rows(env).await, before, "{tool}: no job row");
    fields.iter().map(|f| format!("{}: {}", f.field, f.reason)).collect::<Vec<_>>().join("\n")
}

/// Runs a tool that must fail as invalid input; returns the error text.
async fn run_invalid(env: &Env, tool: &str, p: Value) -> String {
    let job = run(env, tool, p).await;
    assert_eq!(job.status(), JobStatus::Failed, "{tool} should fail");
    assert_eq!(job.error_code.as_deref(), Some("invalid_input"), "{tool}: {:?}", job.error);
    assert!(job.output_ids().is_empty());
    job.error.unwrap()
}

fn px(img: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
    img.get_pixel(x, y).0
}

fn close(a: [u8; 4], b: [u8; 4], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol)
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_scales_keeps_aspect_and_fits() {
    for db in testing::all().await {
        let env = setup(db).await;
        let src = upload(&env, png(&halves(32, 16))).await;
        let media = format!("media:{src}");

        let (row, _, img) = run_ok(&env, "resize", json!({"image": media, "width": 16})).await;
        assert_eq!(row.mime, "image/png");
        assert_eq!(img.dimensions(), (16, 8), "height follows the aspect ratio");
        assert_eq!(px(&img, 1, 4), RED);
        assert_eq!(px(&img, 14, 4), BLUE);

        let (_, _, img) = run_ok(&env, "resize", json!({"image": media, "scale": 2.0, "filter": "nearest"})).await;
        assert_eq!(img.dimensions(), (64, 32));
        assert_eq!(px(&img, 31, 0), RED);
        assert_eq!(px(&img, 32, 0), BLUE, "nearest keeps the hard edge");

        let (_, _, img) = run_ok(&env, "resize", json!({"image": media, "width": 10, "height": 10})).await;
        assert_eq!(img.dimensions(), (10, 5), "contain fits inside the box");
        let (_, _, img) =
            run_ok(&env, "resize", json!({"image": media, "width": 8, "height": 8, "fit": "cover"})).await;
        assert_eq!(img.dimensions(), (8, 8));
        assert_eq!(px(&img, 0, 4), RED, "cover keeps the centre: red on the left");
        assert_eq!(px(&img, 7, 4), BLUE);
        let (_, _, img) = run_ok(&env, "resize", json!({"image": media, "width": 8, "height": 8, "fit": "fill"})).await;
        assert_eq!(img.dimensions(), (8, 8));

        let err = refused(&env, "resize", json!({"image": media, "width": 8, "scale": 2.0})).await;
        assert!(err.starts_with("scale:") && err.contains("cannot be combined"), "{err}");
        let err = refused(&env, "resize", json!({"image": media})).await;
        assert!(err.starts_with("width:") && err.contains("scale"), "{err}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_refuses_outputs_over_the_pixel_limit() {
    let env = setup_with(testing::sqlite().await, true, |c, _| c.media.max_pixels = 10_000).await;
    let src = upload(&env, png(&halves(80, 80))).await;
    let err = refused(&env, "resize", json!({"image": format!("media:{src}"), "scale": 2.0})).await;
    assert!(err.starts_with("scale:") && err.contains("160x160") && err.contains("10000"), "{err}");
    let (_, _, img) = run_ok(&env, "resize", json!({"image": format!("media:{src}"), "scale": 1.25})).await;
    assert_eq!(img.dimensions(), (100, 100), "exactly at the limit is fine");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_chooses_the_format() {
    for db in testing::all().await {
        let env = setup(db).await;
        let src = gradient(24, 12);
        let id = upload(&env, png(&src)).await;
        let media = format!("media:{id}");

        let (row, bytes, img) = run_ok(&env, "convert", json!({"image": media, "format": "jpeg", "quality": 95})).await;
        assert_eq!(row.mime, "image/jpeg");
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
        assert_eq!(img.dimensions(), (24, 12));
        assert!(close(px(&img, 12, 6), px(&src, 12, 6), 24), "{:?}", px(&img, 12, 6));

        let (row, _, img) = run_ok(&env, "convert", json!({"image": media, "format": "webp"})).await;
        assert_eq!(row.mime, "image/webp");
        assert_eq!(img.to_rgba8(), src.to_rgba8(), "webp output is lossless");

        let (row, _, img) = run_ok(&env, "convert", json!({"image": media, "format": "gif"})).await;
        assert_eq!(row.mime, "image/gif");
        assert_eq!(img.dimensions(), (24, 12));

        // From JPEG back to PNG (the tool's default format).
        let jpeg_id = upload(&env, encode(&halves(16, 16), ImageFormat::Jpeg)).await;
        let (row, _, img) = run_ok(&env, "convert", json!({"image": format!("media:{jpeg_id}")})).await;
        assert_eq!(row.mime, "image/png");
        assert!(close(px(&img, 2, 8), RED, 16) && close(px(&img, 13, 8), BLUE, 16));
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crop_by_box_and_by_aspect_with_anchor() {
    for db in testing::all().await {
        let env = setup(db).await;
        let src = gradient(32, 16);
        let id = upload(&env, png(&src)).await;
        let media = format!("media:{id}");

        let (_, _, img) = run_ok(&env, "crop", json!({"image": media, "x": 4, "y": 2, "width": 8, "height": 4})).await;
        assert_eq!(img.dimensions(), (8, 4));
        assert_eq!(px(&img, 0, 0), px(&src, 4, 2));
        assert_eq!(px(&img, 7, 3), px(&src, 11, 5));

        let (_, _, img) = run_ok(&env, "crop", json!({"image": media, "aspect": "1:1"})).await;
        assert_eq!(img.dimensions(), (16, 16));
        assert_eq!(px(&img, 0, 0), px(&src, 8, 0), "centred by default");
        let (_, _, img) = run_ok(&env, "crop", json!({"image": media, "aspect": "1:1", "anchor": "left"})).await;
        assert_eq!(px(&img, 0, 0), px(&src, 0, 0));
        let (_, _, img) =
            run_ok(&env, "crop", json!({"image": media, "aspect": "1:1", "anchor": "bottom-right"})).await;
        assert_eq!(px(&img, 0, 0), px(&src, 16, 0));

        let err = run_invalid(&env, "crop", json!({"image": media, "x": 30, "width": 8, "height": 4})).await;
        assert!(err.starts_with("width:") && err.contains("exceeds image width 32"), "{err}");
        let err = refused(&env, "crop", json!({"image": media, "width": 8, "height": 4, "anchor": "top"})).await;
        assert!(err.starts_with("anchor:"), "{err}");
        let err = run_invalid(&env, "crop", json!({"image": media, "aspect": "wide"})).await;
        assert!(err.starts_with("aspect:") && err.contains("W:H"), "{err}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_is_a_small_jpeg_and_never_enlarges() {
    for db in testing::all().await {
        let env = setup(db).await;
        let id = upload(&env, png(&halves(300, 150))).await;
        let (row, _, img) = run_ok(&env, "thumbnail", json!({"image": format!("media:{id}"), "max_side": 64})).await;
        assert_eq!(row.mime, "image/jpeg");
        assert_eq!(img.dimensions(), (64, 32));
        assert!(close(px(&img, 4, 16), RED, 24) && close(px(&img, 60, 16), BLUE, 24));

        let small = upload(&env, png(&halves(40, 20))).await;
        let (_, _, img) = run_ok(&env, "thumbnail", json!({"image": format!("media:{small}")})).await;
        assert_eq!(img.dimensions(), (40, 20), "default 512 does not enlarge");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_and_flip_move_pixels() {
    for db in testing::all().await {
        let env = setup(db).await;
        let id = upload(&env, png(&marker(4, 2))).await;
        let media = format!("media:{id}");
        for (degrees, dims, at) in [("90", (2, 4), (1, 0)), ("180", (4, 2), (3, 1)), ("270", (2, 4), (0, 3))] {
            let (_, _, img) = run_ok(&env, "rotate", json!({"image": media, "degrees": degrees})).await;
            assert_eq!(img.dimensions(), dims, "{degrees}");
            assert_eq!(px(&img, at.0, at.1), RED, "{degrees}: clockwise");
            assert_eq!(img.to_rgba8().pixels().filter(|p| p.0 == RED).count(), 1);
        }
        let (_, _, img) = run_ok(&env, "flip", json!({"image": media, "direction": "horizontal"})).await;
        assert_eq!((img.dimensions(), px(&img, 3, 0)), ((4, 2), RED));
        let (_, _, img) = run_ok(&env, "flip", json!({"image": media, "direction": "vertical"})).await;
        assert_eq!(px(&img, 0, 1), RED);
        // Submission already refuses a degrees value outside the tool's choices.
        let req = SubmitRequest {
            tool: "rotate".into(),
            params: params(json!({"image": media, "degrees": "45"})),
            ..Default::default()
        };
        let err = env.station.submit(&env.account, req).await.unwrap_err().to_string();
        assert!(err.contains("degrees"), "{err}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_metadata_drops_exif_and_comments_and_keeps_the_format() {
    for db in testing::all().await {
        let env = setup(db).await;
        let jpeg = encode(&halves(16, 16), ImageFormat::Jpeg);
        // A minimal valid EXIF block (big-endian TIFF header, empty IFD) and a comment.
        let exif: &[u8] = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0";
        let comment: &[u8] = b"secret location 51.5N 0.1W";
        let mut tagged = jpeg[..2].to_vec();
        for (marker, body) in [(0xE1u8, exif), (0xFE, comment)] {
            tagged.extend([0xFF, marker]);
            tagged.extend(((body.len() + 2) as u16).to_be_bytes());
            tagged.extend(body);
        }
        tagged.extend(&jpeg[2..]);
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(contains(&tagged, b"Exif") && contains(&tagged, comment));
        let id = upload(&env, tagged).await;
        let (row, bytes, img) = run_ok(&env, "strip-metadata", json!({"image": format!("media:{id}")})).await;
        assert_eq!(row.mime, "image/jpeg", "format kept");
        assert!(!contains(&bytes, b"Exif"), "EXIF left in the output");
        assert!(!contains(&bytes, comment), "comment left in the output");
        assert_eq!(img.dimensions(), (16, 16));
        assert!(close(px(&img, 2, 8), RED, 24));
        env.stop().await;
    }
}

fn write_logo(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("logo.png");
    std::fs::write(&path, png(&image(10, 10, |_, _| [0, 255, 0, 255]))).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_with_a_configured_logo_is_read_once() {
    for db in testing::all().await {
        let env = setup_with(db, true, |c, dir| {
            c.media.watermarks.insert("station".into(), write_logo(dir));
        })
        .await;
        let id = upload(&env, png(&image(40, 20, |_, _| BLACK))).await;
        let media = format!("media:{id}");
        let p = json!({"image": media, "logo": "station", "position": "top-left", "margin": 2,
            "opacity": 1.0, "scale": 0.25});
        let (_, _, img) = run_ok(&env, "watermark", p.clone()).await;
        assert_eq!(img.dimensions(), (40, 20));
        // 10 px wide logo → 40 × 0.25 = 10 px, placed at (2, 2).
        assert_eq!(px(&img, 2, 2), [0, 255, 0, 255]);
        assert_eq!(px(&img, 11, 11), [0, 255, 0, 255]);
        assert_eq!(px(&img, 1, 1), BLACK, "margin left untouched");
        assert_eq!(px(&img, 12, 12), BLACK);
        assert_eq!(px(&img, 39, 19), BLACK);

        let half = json!({"image": media, "logo": "station", "position": "bottom-right", "margin": 0,
            "opacity": 0.5, "scale": 0.25});
        let (_, _, img) = run_ok(&env, "watermark", half.clone()).await;
        assert!(close(px(&img, 39, 19), [0, 128, 0, 255], 2), "{:?}", px(&img, 39, 19));
        assert_eq!(px(&img, 0, 0), BLACK);

        // The logo was decoded once and cached: deleting the file changes nothing.
        std::fs::remove_file(env.dir.path().join("logo.png")).unwrap();
        run_ok(&env, "watermark", p).await;

        let err = refused(&env, "watermark", json!({"image": media, "logo": "acme"})).await;
        assert!(err.starts_with("logo:") && err.contains("acme") && err.contains("station"), "{err}");
        let err = refused(&env, "watermark", json!({"image": media})).await;
        assert!(err.starts_with("text:") && err.contains("logo"), "{err}");
        env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_with_text() {
    let env = setup(testing::sqlite().await).await;
    let id = upload(&env, png(&image(200, 100, |_, _| BLACK))).await;
    let (_, _, img) = run_ok(
        &env,
        "watermark",
        json!({"image": format!("media:{id}"), "text": "Station", "opacity": 1.0, "scale": 0.5,
            "color": "#ff0000", "position": "bottom-right"}),
    )
    .await;
    let rgba = img.to_rgba8();
    let reddish = |x0: u32, x1: u32, y0: u32, y1: u32| {
        (x0..x1).flat_map(|x| (y0..y1).map(move |y| (x, y))).filter(|&(x, y)| rgba.get_pixel(x, y).0[0] > 128).count()
    };
    assert!(reddish(100, 200, 50, 100) > 100, "text drawn bottom-right");
    // 100 px of text plus the 16 px default margin starts at x = 84.
    assert_eq!(reddish(0, 80, 0, 100), 0, "nothing drawn left of the mark");
    let err = refused(&env, "watermark", json!({"image": format!("media:{id}"), "text": "x", "color": "red"})).await;
    assert!(err.starts_with("color:"), "{err}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tools_for_blur_invert_and_misnamed_inputs() {
    let env = setup(testing::sqlite().await).await;
    let id = upload(&env, png(&halves(32, 8))).await;
    let (_, _, img) = run_ok(&env, "negative", json!({"image": format!("media:{id}")})).await;
    assert_eq!(px(&img, 0, 0), [0, 255, 255, 255]);
    assert_eq!(px(&img, 31, 0), [255, 255, 0, 255]);
    let (_, _, img) = run_ok(&env, "soften", json!({"image": format!("media:{id}"), "sigma": 3.0})).await;
    let edge = px(&img, 16, 4);
    assert!(edge[0] > 20 && edge[2] > 20, "the red/blue edge is mixed: {edge:?}");
    assert!(close(px(&img, 0, 4), RED, 8));

    let err = refused(&env, "mirror-number", json!({"image": format!("media:{id}")})).await;
    assert!(err.starts_with("direction:") && err.contains("integer"), "{err}");
    let err = refused(&env, "mirror-extra", json!({"image": format!("media:{id}")})).await;
    assert!(err.starts_with("speed:") && err.contains("no such option"), "{err}");
    env.stop().await;
}

// ---------------------------------------------------------------------------
// hostile and broken inputs

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A tiny valid PNG whose header claims `w` × `h` pixels.
fn bomb_header(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = png(&image(1, 1, |_, _| BLACK));
    // IHDR data starts at 16 (8 signature + 4 length + 4 type); its CRC follows the 13 data bytes.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_and_truncated_files_fail_cleanly() {
    for db in testing::all().await {
        let env = setup_with(db, true, |c, _| c.media.max_pixels = 1_000_000).await;

        let huge = insert_raw(&env, &bomb_header(100_000, 100_000)).await;
        let err = run_invalid(&env, "resize", json!({"image": format!("media:{huge}"), "width": 16})).await;
        assert!(err.starts_with("image:") && err.contains("100000"), "{err}");

        // A real image: 4 megapixels of black compress to a few kilobytes.
        let dense = png(&image(2000, 2000, |_, _| BLACK));
        assert!(dense.len() < 100_000);
        let dense = insert_raw(&env, &dense).await;
        let err = run_invalid(&env, "thumbnail", json!({"image": format!("media:{dense}")})).await;
        assert!(err.starts_with("image:") && err.contains("4000000") && err.contains("1000000"), "{err}");

        let full = png(&gradient(64, 64));
        let cut = insert_raw(&env, &full[..full.len() / 2]).await;
        let err = run_invalid(&env, "rotate", json!({"image": format!("media:{cut}"), "degrees": "90"})).await;
        assert!(err.starts_with("image:") && err.contains("truncated"), "{err}");

        let junk = insert_raw(&env, b"definitely not an image, just text").await;
        let err = run_invalid(&env, "flip", json!({"image": format!("media:{junk}")})).await;
        assert!(err.starts_with("image:"), "{err}");

        // The workers survived all of it.
        let ok = upload(&env, png(&marker(4, 2))).await;
        let (_, _, img) = run_ok(&env, "flip", json!({"image": format!("media:{ok}")})).await;
        assert_eq!(px(&img, 3, 0), RED);
        env.stop().await;
    }
}

// ---------------------------------------------------------------------------
// progress, cancellation, capacity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_rise_to_one() {
    for db in testing::all().await {
        let env = setup(db).await;
        let id = upload(&env, png(&halves(64, 64))).await;
        let mut events = env.station.bus.subscribe();
        let job = submit(&env, "resize", json!({"image": format!("media:{id}"), "width": 32})).await;
        let mut fractions = vec![];
        let mut statuses = vec![];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("job finished").unwrap();
            if ev.job_id() != job.id {
                continue;
            }
            match ev {
                JobEvent::Progress { fraction, .. } => fractions.push(fraction),
                JobEvent::Status { status, .. } => {
                    statuses.push(status);
                    if status == JobStatus::Succeeded {
                        break;
                    }
                    assert_ne!(status, JobStatus::Failed);
                }
                _ => {}
            }
        }
        assert!(fractions.len() >= 3, "{fractions:?}");
        assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
        assert_eq!(fractions.last(), Some(&1.0));
        assert!(statuses.contains(&JobStatus::Running), "{statuses:?}");
        let done = env.station.job(&job.id).await.unwrap().unwrap();
        assert_eq!(done.progress, 1.0);
        env.stop().await;
    }
}

/// A job handed to the executor directly (no workers), as the worker would.
async fn direct_job(env: &Env, tool: &str, bytes: Vec<u8>, p: Value) -> ExecJob {
    let id = upload(env, bytes.clone()).await;
    let mut p = params(p);
    p.insert("image".into(), json!(format!("media:{id}")));
    let row = submit(env, tool, Value::Object(p.clone())).await;
    let input =
        InputImage { media_id: id, bytes: Arc::new(bytes), mime: "image/png".into(), filename: "in.png".into() };
    ExecJob {
        tool: env.station.tools.get(tool).unwrap(),
        params: row.params_json(),
        images: HashMap::from([("image".to_string(), input)]),
        row,
        dataset: vec![],
    }
}

fn ctx(env: &Env, job: &ExecJob, cancel: CancellationToken) -> ExecContext {
    env.station.exec_context("test-owner", &job.row.id, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_do_no_work() {
    let env = setup_with(testing::sqlite().await, false, |_, _| {}).await;
    let ex = MediaExecutor::new(&env.station.config);
    let job = direct_job(&env, "resize", png(&halves(16, 16)), json!({"width": 8})).await;
    let token = CancellationToken::new();
    token.cancel();
    let mut events = env.station.bus.subscribe();
    let r = ex.execute(job.clone(), ctx(&env, &job, token)).await;
    assert!(matches!(r, Err(ExecError::Cancelled)), "{r:?}");
    assert!(events.try_recv().is_err(), "no progress for a job cancelled before it started");
    assert_eq!(ex.in_flight(), 0);

    // Cancelled mid-way: a heavy blur is abandoned promptly.
    let job = direct_job(&env, "soften", png(&halves(800, 800)), json!({"sigma": 30.0})).await;
    let token = CancellationToken::new();
    let run = tokio::spawn({
        let (ex, c) = (Arc::new(ex), ctx(&env, &job, token.clone()));
        async move { ex.execute(job, c).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    token.cancel();
    let r = run.await.unwrap();
    assert!(matches!(r, Err(ExecError::Cancelled)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "cancel took {:?}", t0.elapsed());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_running_jobs_and_capacity_stays_the_pool_size() {
    let env = setup_with(testing::sqlite().await, false, |c, _| c.media.workers = 3).await;
    let ex = Arc::new(MediaExecutor::new(&env.station.config));
    assert_eq!(ex.service(), "media");
    assert_eq!(ex.capacity(), 3);
    let job = direct_job(&env, "soften", png(&halves(600, 600)), json!({"sigma": 20.0})).await;
    let c = ctx(&env, &job, CancellationToken::new());
    let run = tokio::spawn({
        let ex = ex.clone();
        async move { ex.execute(job, c).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while ex.in_flight() == 0 {
        assert!(!run.is_finished(), "in_flight never rose while the job ran");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(ex.in_flight(), 1);
    assert_eq!(ex.capacity(), 3, "capacity is the pool size; the worker subtracts its own running jobs");
    let files = run.await.unwrap().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].filename.ends_with(".png"));
    assert_eq!(ex.in_flight(), 0, "slot freed when the job ends");
    let health = ex.health().await;
    assert!(health[0].1, "{health:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_media_workers_defaults_to_cpu_count() {
    let config = Config::default();
    let cpus = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap();
    assert_eq!(MediaExecutor::new(&config).capacity(), cpus);
}
