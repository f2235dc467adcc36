//! The native media executor: runs `"service": "media"` tools inside Station.
//!
//! Media jobs go through the same queue, points, progress and delivery as
//! ComfyUI jobs; only the execution differs. Each job decodes its primary
//! image within the configured limits, runs one `station_media::ops`
//! operation and encodes the result, every CPU-bound step on tokio's
//! blocking pool so the async workers stay responsive.
//!
//! Tool inputs map onto the operation's options struct by name (serde), so a
//! tool file's input names are the option fields of `station_media::ops`.
//! Two inputs are translated first because their user-facing form differs
//! from the option struct: crop's `anchor` (a named edge or corner, turned
//! into `focus_x`/`focus_y`) and rotate's `degrees` (an enum, so a string).
//! Watermark's `logo` names one of the operator's configured watermark
//! images rather than an option.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use station_media::image::DynamicImage;
use station_media::ops::{
    self, BlurOptions, ConvertOptions, CropOptions, Fit, FlipOptions, ResizeOptions, RotateOptions, ThumbnailOptions,
    WatermarkOptions,
};
use station_media::{DecodeLimits, MediaError, MediaFormat};
use station_store::JobRow;
use station_tools::{InputType, MediaOperation, ToolDef};

use crate::config::Config;
use crate::executor::{ExecContext, ExecError, ExecJob, Executor, OutputFile};

/// Runs media tools on a local pool sized by `media.workers` (one per CPU by default).
pub struct MediaExecutor {
    workers: usize,
    in_flight: Arc<AtomicUsize>,
    limits: DecodeLimits,
    watermarks: BTreeMap<String, PathBuf>,
    /// Decoded watermark logos by configured name: read once, reused by every job.
    logos: Mutex<HashMap<String, Arc<DynamicImage>>>,
}

/// Counts a job as in flight until every clone is dropped, including clones
/// held by blocking tasks that outlive an aborted or timed-out job: the CPU is
/// busy until they finish, so capacity must say so.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Arc<InFlight> {
        counter.fetch_add(1, Ordering::SeqCst);
        Arc::new(InFlight(counter.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An operation with its options parsed, ready for a blocking thread.
#[derive(Debug, Clone)]
enum Op {
    Resize(ResizeOptions),
    Convert(ConvertOptions),
    Crop(CropOptions),
    Thumbnail(ThumbnailOptions),
    Watermark(WatermarkOptions, Option<Arc<DynamicImage>>),
    Rotate(RotateOptions),
    Flip(FlipOptions),
    StripMetadata,
    Blur(BlurOptions),
    Invert,
}

impl MediaExecutor {
    /// An executor with `config.media_workers()` slots, decoding with the
    /// configured `media.max_bytes`/`media.max_pixels` and offering the
    /// configured watermark logos.
    pub fn new(config: &Config) -> MediaExecutor {
        MediaExecutor {
            workers: config.media_workers(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            limits: DecodeLimits {
                max_bytes: config.media.max_bytes,
                max_pixels: config.media.max_pixels,
                ..Default::default()
            },
            watermarks: config.media.watermarks.clone(),
            logos: Mutex::new(HashMap::new()),
        }
    }

    /// Jobs currently executing (including blocking work of jobs already abandoned).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The configured watermark logo `name`, decoded (cached after the first use).
    async fn logo(&self, name: &str, guard: &Arc<InFlight>) -> Result<Arc<DynamicImage>, ExecError> {
        if let Some(img) = self.logos.lock().expect("logo cache").get(name) {
            return Ok(img.clone());
        }
        let Some(path) = self.watermarks.get(name).cloned() else {
            let known: Vec<&str> = self.watermarks.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                format!("logo: no watermark named {name:?}; none are configured (media.watermarks)")
            } else {
                format!("logo: no watermark named {name:?}; configured: {}", known.join(", "))
            };
            return Err(invalid("logo", message));
        };
        let limits = self.limits;
        let guard = guard.clone();
        let shown = path.display().to_string();
        let img = tokio::task::spawn_blocking(move || {
            let _busy = guard;
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            station_media::decode(&bytes, &limits).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ExecError::Failed(format!("watermark {name:?} ({shown}): loader crashed: {e}")))?
        // The operator's file is at fault, not the user's request; not caching
        // the failure lets a fixed file work without a restart.
        .map_err(|e| ExecError::Failed(format!("watermark {name:?} ({shown}) cannot be used: {e}")))?;
        let img = Arc::new(img);
        self.logos.lock().expect("logo cache").insert(name.to_string(), img.clone());
        Ok(img)
    }

    /// Turns the job's parameters into a parsed operation (no pixels touched yet).
    async fn parse_op(
        &self,
        tool: &ToolDef,
        operation: MediaOperation,
        params: &Map<String, Value>,
        guard: &Arc<InFlight>,
    ) -> Result<Op, ExecError> {
        let (op, logo) = options_of(tool, operation, params)?;
        Ok(match (op, logo) {
            (Op::Watermark(wm, _), Some(name)) => Op::Watermark(wm, Some(self.logo(&name, guard).await?)),
            (Op::Watermark(wm, None), None) => {
                if wm.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    let known: Vec<&str> = self.watermarks.keys().map(String::as_str).collect();
                    let which =
                        if known.is_empty() { String::new() } else { format!(" (one of: {})", known.join(", ")) };
                    return Err(invalid("logo", format!("logo: give a logo{which} or a text")));
                }
                Op::Watermark(wm, None)
            }
            (op, _) => op,
        })
    }
}

/// The operation and its options from a job's parameters, without touching
/// pixels or files; for watermark, the logo's name (loaded by the caller).
fn options_of(
    tool: &ToolDef,
    operation: MediaOperation,
    params: &Map<String, Value>,
) -> Result<(Op, Option<String>), ExecError> {
    // Image inputs are handed over separately; null means "not given".
    let mut opts: Map<String, Value> = params
        .iter()
        .filter(|(k, v)| !v.is_null() && tool.inputs.get(*k).is_none_or(|d| d.kind != InputType::Image))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut logo = None;
    let op = match operation {
        MediaOperation::Resize => Op::Resize(options(opts)?),
        MediaOperation::Convert => Op::Convert(options(opts)?),
        MediaOperation::Crop => {
            if let Some(anchor) = opts.remove("anchor") {
                if !opts.contains_key("aspect") {
                    return Err(invalid(
                        "anchor",
                        "anchor: only applies with aspect; place a width/height box with x and y".into(),
                    ));
                }
                let (fx, fy) = anchor_focus(&anchor)?;
                opts.insert("focus_x".into(), fx.into());
                opts.insert("focus_y".into(), fy.into());
            }
            Op::Crop(options(opts)?)
        }
        MediaOperation::Thumbnail => Op::Thumbnail(options(opts)?),
        MediaOperation::Watermark => {
            match opts.remove("logo") {
                Some(Value::String(name)) if !name.trim().is_empty() => logo = Some(name.trim().to_string()),
                Some(Value::String(_)) | None => {}
                Some(other) => {
                    return Err(invalid("logo", format!("logo: expected a watermark name, got {other}")));
                }
            }
            Op::Watermark(options(opts)?, None)
        }
        MediaOperation::Rotate => {
            // Enum inputs arrive as strings ("90"); the option is a number.
            if let Some(Value::String(s)) = opts.get("degrees") {
                let n: u32 = s
                    .trim()
                    .parse()
                    .map_err(|_| invalid("degrees", format!("degrees: {s:?} is not one of 90, 180, 270")))?;
                opts.insert("degrees".into(), n.into());
            }
            Op::Rotate(options(opts)?)
        }
        MediaOperation::Flip => Op::Flip(options(opts)?),
        MediaOperation::StripMetadata => {
            options::<Empty>(opts)?;
            Op::StripMetadata
        }
        MediaOperation::Blur => Op::Blur(options(opts)?),
        MediaOperation::Invert => {
            options::<Empty>(opts)?;
            Op::Invert
        }
    };
    Ok((op, logo))
}

/// What a native media tool's job would be refused for that can be known
/// before it is queued, as `(input, reason)`: options that do not parse,
/// crop's anchor without aspect, a logo that is not configured, watermark
/// colour, text and ranges, and a resize beyond `media.max_pixels` when the
/// input image's size (`image_size`) is known. Run at submit by
/// [`crate::Station::submit`] and every front end's pre-flight check.
pub fn check(
    tool: &ToolDef,
    params: &Map<String, Value>,
    config: &Config,
    image_size: Option<(u32, u32)>,
) -> Vec<(String, String)> {
    let Some(operation) = tool.media.map(|m| m.operation) else { return vec![] };
    let problem = |e: ExecError| match e {
        ExecError::Invalid { message, field } => {
            let field = field.unwrap_or_default();
            // Messages repeat the field first ("logo: ..."): the answer names it already.
            let reason = message.strip_prefix(&format!("{field}: ")).unwrap_or(&message).to_string();
            vec![(field, reason)]
        }
        other => vec![(String::new(), other.to_string())],
    };
    let (op, logo) = match options_of(tool, operation, params) {
        Ok(parsed) => parsed,
        Err(e) => return problem(e),
    };
    let mut out = vec![];
    match &op {
        Op::Watermark(wm, _) => {
            if let Some(name) = &logo
                && !config.media.watermarks.contains_key(name)
            {
                let known: Vec<&str> = config.media.watermarks.keys().map(String::as_str).collect();
                let reason = if known.is_empty() {
                    format!("no watermark named {name:?}; none are configured (media.watermarks)")
                } else {
                    format!("no watermark named {name:?}; configured: {}", known.join(", "))
                };
                out.push(("logo".to_string(), reason));
            }
            if let Err(e) = wm.check(logo.is_some()) {
                out.extend(problem(op_error(tool, operation, e)));
            }
        }
        Op::Resize(o) => {
            if let Some((w, h)) = image_size
                && let Some((tw, th, field)) = resize_target(w, h, o)
                && tw.saturating_mul(th) > config.media.max_pixels
            {
                let max = config.media.max_pixels;
                out.push((field.to_string(), format!("the result would be {tw}x{th}, over the limit of {max} pixels")));
            }
        }
        _ => {}
    }
    out
}

/// Operations without options still refuse stray inputs, so a mistyped tool
/// file is reported instead of silently ignored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn invalid(field: &str, message: String) -> ExecError {
    ExecError::Invalid { message, field: Some(field.to_string()) }
}

/// Crop anchors as focus fractions (x, y) of the image.
const ANCHORS: &[(&str, f64, f64)] = &[
    ("center", 0.5, 0.5),
    ("top", 0.5, 0.0),
    ("bottom", 0.5, 1.0),
    ("left", 0.0, 0.5),
    ("right", 1.0, 0.5),
    ("top-left", 0.0, 0.0),
    ("top-right", 1.0, 0.0),
    ("bottom-left", 0.0, 1.0),
    ("bottom-right", 1.0, 1.0),
];

fn anchor_focus(anchor: &Value) -> Result<(f64, f64), ExecError> {
    let name = anchor.as_str().unwrap_or_default();
    ANCHORS.iter().find(|(n, _, _)| *n == name).map(|&(_, x, y)| (x, y)).ok_or_else(|| {
        let names: Vec<&str> = ANCHORS.iter().map(|(n, _, _)| *n).collect();
        invalid("anchor", format!("anchor: {anchor} is not one of {}", names.join(", ")))
    })
}

/// Deserialises an options struct, naming the offending input on failure.
fn options<T: DeserializeOwned>(opts: Map<String, Value>) -> Result<T, ExecError> {
    let err = match serde_json::from_value::<T>(Value::Object(opts.clone())) {
        Ok(v) => return Ok(v),
        Err(e) => e.to_string(),
    };
    if let Some(field) = backticked(&err, "unknown field `") {
        return Err(invalid(
            &field,
            format!("{field}: this operation has no such option (the tool file's input names must match it)"),
        ));
    }
    if let Some(field) = backticked(&err, "missing field `") {
        return Err(invalid(&field, format!("{field}: required")));
    }
    // serde's type errors do not say which key they were in: try each key alone
    // and blame the first that fails for a reason other than a missing sibling.
    for (k, v) in &opts {
        let single = Map::from_iter([(k.clone(), v.clone())]);
        if let Err(e) = serde_json::from_value::<T>(Value::Object(single)) {
            let e = e.to_string();
            if !e.starts_with("missing field") {
                return Err(invalid(k, format!("{k}: {e}")));
            }
        }
    }
    Err(ExecError::Invalid { message: format!("invalid options: {err}"), field: None })
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = &msg[msg.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// Maps an operation error to the tool input it concerns.
fn op_error(tool: &ToolDef, operation: MediaOperation, e: MediaError) -> ExecError {
    let field = match &e {
        MediaError::InvalidOption { field: "focus_x" | "focus_y", .. } if operation == MediaOperation::Crop => {
            Some("anchor")
        }
        MediaError::InvalidOption { field, .. } => Some(*field),
        MediaError::TooLarge { what, .. } if tool.inputs.contains_key(*what) => Some(*what),
        _ => None,
    };
    match (field, e) {
        (Some(f), MediaError::InvalidOption { reason, .. }) => invalid(f, format!("{f}: {reason}")),
        (Some(f), e) => invalid(f, format!("{f}: {e}")),
        (None, e @ (MediaError::InvalidOption { .. } | MediaError::TooLarge { .. })) => {
            ExecError::Invalid { message: e.to_string(), field: None }
        }
        (None, e) => ExecError::Failed(e.to_string()),
    }
}

/// The output size a resize would produce, estimated from the options before
/// allocating it, so an upscale cannot exhaust memory.
fn resize_target(w: u32, h: u32, o: &ResizeOptions) -> Option<(u64, u64, &'static str)> {
    let (w, h) = (f64::from(w), f64::from(h));
    let (tw, th, field) = match (o.width, o.height, o.scale) {
        (None, None, Some(s)) => (w * f64::from(s), h * f64::from(s), "scale"),
        (Some(tw), None, None) => (f64::from(tw), h * f64::from(tw) / w, "width"),
        (None, Some(th), None) => (w * f64::from(th) / h, f64::from(th), "height"),
        (Some(tw), Some(th), None) => match o.fit {
            Fit::Contain => {
                let f = (f64::from(tw) / w).min(f64::from(th) / h);
                (w * f, h * f, "width")
            }
            Fit::Cover | Fit::Fill => (f64::from(tw), f64::from(th), "width"),
        },
        // Inconsistent combinations are refused by the operation itself.
        _ => return None,
    };
    Some((tw.round().max(1.0) as u64, th.round().max(1.0) as u64, field))
}

/// Runs the operation on decoded pixels.
fn run_op(img: DynamicImage, op: &Op, max_pixels: u64) -> Result<DynamicImage, MediaError> {
    match op {
        Op::Resize(o) => {
            if let Some((tw, th, field)) = resize_target(img.width(), img.height(), o)
                && tw.saturating_mul(th) > max_pixels
            {
                return Err(MediaError::InvalidOption {
                    field,
                    reason: format!("the result would be {tw}x{th}, over the limit of {max_pixels} pixels"),
                });
            }
            ops::resize(&img, o)
        }
        Op::Convert(_) | Op::StripMetadata => Ok(img),
        Op::Crop(o) => ops::crop(&img, o),
        Op::Thumbnail(o) => ops::thumbnail_image(&img, o.max_side),
        Op::Watermark(o, logo) => ops::watermark(&img, logo.as_deref(), o),
        Op::Rotate(o) => ops::rotate(&img, o),
        Op::Flip(o) => Ok(ops::flip(&img, o)),
        Op::Blur(o) => ops::blur(&img, o),
        Op::Invert => Ok(ops::invert(&img)),
    }
}

/// Encodes the result: convert picks the format, thumbnails are JPEG,
/// strip-metadata keeps the input's format, everything else is lossless PNG.
fn encode_output(img: &DynamicImage, op: &Op, input: MediaFormat) -> Result<(Vec<u8>, MediaFormat), MediaError> {
    match op {
        Op::Convert(o) => Ok((ops::convert(img, o)?, o.format)),
        Op::Thumbnail(o) => Ok((ops::encode(img, MediaFormat::Jpeg, Some(o.quality))?, MediaFormat::Jpeg)),
        Op::StripMetadata => Ok((ops::encode(img, input, None)?, input)),
        _ => Ok((ops::encode(img, MediaFormat::Png, None)?, MediaFormat::Png)),
    }
}

/// Runs `f` on the blocking pool; gives up waiting as soon as the job is cancelled.
async fn blocking<T: Send + 'static>(
    ctx: &ExecContext,
    guard: &Arc<InFlight>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ExecError> {
    let guard = guard.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let _busy = guard;
        f()
    });
    tokio::select! {
        biased;
        _ = ctx.cancelled().cancelled() => Err(ExecError::Cancelled),
        r = handle => r.map_err(|e| ExecError::Failed(format!("media operation crashed: {e}"))),
    }
}

fn check_cancel(ctx: &ExecContext) -> Result<(), ExecError> {
    if ctx.cancelled().is_cancelled() { Err(ExecError::Cancelled) } else { Ok(()) }
}

/// The input holding the image to process: the primary image input, else the first image input.
fn image_input(tool: &ToolDef) -> Option<&str> {
    match tool.primary_input() {
        Some((name, def)) if def.kind == InputType::Image => Some(name),
        _ => tool.inputs.iter().find(|(_, d)| d.kind == InputType::Image).map(|(n, _)| n.as_str()),
    }
}

#[async_trait]
impl Executor for MediaExecutor {
    fn service(&self) -> &'static str {
        "media"
    }

    fn capacity(&self) -> usize {
        self.workers
    }

    async fn execute(&self, job: ExecJob, ctx: ExecContext) -> Result<Vec<OutputFile>, ExecError> {
        check_cancel(&ctx)?;
        let guard = InFlight::enter(&self.in_flight);
        let tool = job.tool.clone();
        let operation = tool.media.map(|m| m.operation).ok_or_else(|| ExecError::Invalid {
            message: format!("tool {} has no media operation", tool.id),
            field: None,
        })?;
        let op_name = serde_json::to_value(operation).ok().and_then(|v| v.as_str().map(str::to_owned));
        let op_name = op_name.unwrap_or_else(|| format!("{operation:?}"));
        let image_name = image_input(&tool)
            .ok_or_else(|| ExecError::Invalid { message: format!("tool {} has no image input", tool.id), field: None })?
            .to_string();
        let input = job
            .images
            .get(&image_name)
            .cloned()
            .ok_or_else(|| invalid(&image_name, format!("{image_name}: required")))?;
        // Options are checked before any decoding so a bad request fails cheaply.
        let op = Arc::new(self.parse_op(&tool, operation, &job.params, &guard).await?);

        check_cancel(&ctx)?;
        ctx.running().await;
        // Decoding, the operation and encoding hold one of the process's
        // decoding slots (media.decode_concurrency): what bounds memory.
        let slot = ctx.decode_slot().await?;
        ctx.progress(0.05, Some(1), Some(3), Some("decoding".into())).await;
        let limits = self.limits;
        let bytes = input.bytes.clone();
        let decoded = blocking(&ctx, &guard, move || {
            let format = station_media::decode::detect_format(&bytes)?;
            Ok::<_, MediaError>((station_media::decode(&bytes, &limits)?, format))
        })
        .await?;
        let (img, format) = decoded.map_err(|e| invalid(&image_name, format!("{image_name}: {e}")))?;

        check_cancel(&ctx)?;
        ctx.progress(0.35, Some(2), Some(3), Some(op_name)).await;
        let (op2, max_pixels) = (op.clone(), self.limits.max_pixels);
        let out = blocking(&ctx, &guard, move || run_op(img, &op2, max_pixels))
            .await?
            .map_err(|e| op_error(&tool, operation, e))?;

        check_cancel(&ctx)?;
        ctx.progress(0.7, Some(3), Some(3), Some("encoding".into())).await;
        let op3 = op.clone();
        let (bytes, out_format) = blocking(&ctx, &guard, move || encode_output(&out, &op3, format))
            .await?
            .map_err(|e| op_error(&tool, operation, e))?;
        drop(slot);
        ctx.progress(1.0, Some(3), Some(3), Some("done".into())).await;
        drop(guard);
        Ok(vec![OutputFile { bytes, filename: format!("{}.{}", tool.id, out_format.name()) }])
    }

    async fn cancel_remote(&self, _job: &JobRow) {
        // Nothing runs remotely: a cancelled job stops at its next step.
    }

    async fn health(&self) -> Vec<(String, bool, String)> {
        vec![(
            "media".into(),
            true,
            format!("{} of {} local workers busy", self.in_flight().min(self.workers), self.workers),
        )]
    }
}
