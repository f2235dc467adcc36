//! Pure image operations. Each takes a typed, serde-deserialisable options struct
//! (snake_case names, filled from tool parameters) and never touches the filesystem.
//!
//! Resizing goes through `fast_image_resize` (SIMD, rayon across rows), never the
//! image crate's scalar resize.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use fast_image_resize as fir;
use image::codecs::{gif::GifEncoder, jpeg::JpegEncoder, png::PngEncoder, webp::WebPEncoder};
use image::imageops::GaussianBlurParameters;
use image::{DynamicImage, GenericImageView, ImageEncoder, RgbImage, Rgba, RgbaImage};
use serde::{Deserialize, Serialize};

use crate::decode::{self, DecodeLimits, MediaFormat};
use crate::error::{MediaError, Result};

/// Largest side any operation will produce; matches the default decode limit so an
/// output can always be read back.
pub const MAX_OUTPUT_SIDE: u32 = 16384;

/// JPEG quality used when the caller gives none.
pub const DEFAULT_JPEG_QUALITY: u8 = 90;

// ---------------------------------------------------------------------------
// resize

/// How the image is fitted into a target box given both width and height.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Scale to fit inside the box, keeping the aspect ratio (output may be smaller).
    #[default]
    Contain,
    /// Scale to cover the box and crop the overflow around the centre.
    Cover,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Lanczos with a = 3: sharpest, the default.
    #[default]
    Lanczos3,
    /// Bilinear (triangle) filter.
    Bilinear,
    /// Nearest neighbour: no new colours, blocky.
    Nearest,
    /// Catmull-Rom cubic.
    Catmullrom,
}

impl Filter {
    fn algorithm(self) -> fir::ResizeAlg {
        match self {
            Filter::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
            Filter::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            Filter::Nearest => fir::ResizeAlg::Nearest,
            Filter::Catmullrom => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
        }
    }
}

/// Options for [`resize`]. Give `width` and/or `height`, or `scale` alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResizeOptions {
    /// Target width in pixels.
    pub width: Option<u32>,
    /// Target height in pixels.
    pub height: Option<u32>,
    /// Uniform scale factor (e.g. 0.5); excludes width/height.
    pub scale: Option<f32>,
    /// Fitting mode when both width and height are given.
    pub fit: Fit,
    /// Resampling filter.
    pub filter: Filter,
}

fn check_side(field: &'static str, v: u32) -> Result<u32> {
    if v == 0 {
        return Err(MediaError::option(field, "must be at least 1"));
    }
    if v > MAX_OUTPUT_SIDE {
        return Err(MediaError::TooLarge { what: field, limit: u64::from(MAX_OUTPUT_SIDE), actual: u64::from(v) });
    }
    Ok(v)
}

fn scaled(v: u32, f: f64) -> u32 {
    ((f64::from(v) * f).round() as u32).max(1)
}

/// Resizes with fast_image_resize. With only one of width/height the other follows
/// the aspect ratio; with both, `fit` decides.
pub fn resize(img: &DynamicImage, opts: &ResizeOptions) -> Result<DynamicImage> {
    let (w, h) = img.dimensions();
    let (tw, th, cover) = match (opts.width, opts.height, opts.scale) {
        (None, None, None) => {
            return Err(MediaError::option("width", "give width and/or height, or scale"));
        }
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(MediaError::option("scale", "cannot be combined with width or height"));
        }
        (None, None, Some(s)) => {
            if !(s.is_finite() && s > 0.0) {
                return Err(MediaError::option("scale", format!("{s} is not > 0")));
            }
            let f = f64::from(s);
            (scaled(w, f), scaled(h, f), false)
        }
        (Some(tw), None, None) => {
            let tw = check_side("width", tw)?;
            (tw, scaled(h, f64::from(tw) / f64::from(w)), false)
        }
        (None, Some(th), None) => {
            let th = check_side("height", th)?;
            (scaled(w, f64::from(th) / f64::from(h)), th, false)
        }
        (Some(tw), Some(th), None) => {
            let (tw, th) = (check_side("width", tw)?, check_side("height", th)?);
            match opts.fit {
                Fit::Fill => (tw, th, false),
                Fit::Cover => (tw, th, true),
                Fit::Contain => {
                    let f = (f64::from(tw) / f64::from(w)).min(f64::from(th) / f64::from(h));
                    (scaled(w, f).min(tw), scaled(h, f).min(th), false)
                }
            }
        }
    };
    let tw = check_side("width", tw)?;
    let th = check_side("height", th)?;
    resize_exact(img, tw, th, opts.filter.algorithm(), cover)
}

/// The single place that calls the SIMD resizer. `cover` crops the source to the
/// target aspect ratio around its centre first.
pub(crate) fn resize_exact(
    img: &DynamicImage,
    width: u32,
    height: u32,
    alg: fir::ResizeAlg,
    cover: bool,
) -> Result<DynamicImage> {
    let mut dst = DynamicImage::new(width, height, img.color());
    let mut options = fir::ResizeOptions::new().resize_alg(alg);
    if cover {
        options = options.fit_into_destination(Some((0.5, 0.5)));
    }
    fir::Resizer::new().resize(img, &mut dst, &options).map_err(|e| MediaError::Resize(e.to_string()))?;
    Ok(dst)
}

// ---------------------------------------------------------------------------
// encode / convert

/// Options for [`convert`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertOptions {
    /// Output format.
    pub format: MediaFormat,
    /// JPEG quality 1–100 (default 90); ignored by lossless formats.
    #[serde(default)]
    pub quality: Option<u8>,
    /// Lossy WebP. Refused: no well-kept pure-Rust lossy WebP encoder exists, and the
    /// image crate writes lossless WebP only.
    #[serde(default)]
    pub lossy: bool,
}

/// Re-encodes to another format. WebP output is lossless only; GIF output is a
/// single frame (the input is already a still image by the time it gets here).
pub fn convert(img: &DynamicImage, opts: &ConvertOptions) -> Result<Vec<u8>> {
    if opts.lossy {
        return Err(MediaError::option(
            "lossy",
            match opts.format {
                MediaFormat::Webp => {
                    "lossy WebP is not available (only a pure-Rust lossless WebP encoder \
                     is used); use lossy=false or format=jpeg"
                }
                _ => "only meaningful for webp, which supports lossless output only",
            },
        ));
    }
    encode(img, opts.format, opts.quality)
}

/// Encodes without any metadata (no EXIF, ICC or text chunks are ever written).
/// JPEG has no alpha, so transparent areas are flattened onto white.
pub fn encode(img: &DynamicImage, format: MediaFormat, quality: Option<u8>) -> Result<Vec<u8>> {
    if let Some(q) = quality
        && !(1..=100).contains(&q)
    {
        return Err(MediaError::option("quality", format!("{q} is not in 1..=100")));
    }
    let mut out = Vec::new();
    let enc_err = |e: image::ImageError| MediaError::Encode { format: format.name(), reason: e.to_string() };
    let (w, h) = img.dimensions();
    match format {
        MediaFormat::Jpeg => {
            let rgb = flatten_on_white(img);
            JpegEncoder::new_with_quality(&mut out, quality.unwrap_or(DEFAULT_JPEG_QUALITY))
                .write_image(rgb.as_raw(), w, h, image::ExtendedColorType::Rgb8)
                .map_err(enc_err)?;
        }
        MediaFormat::Png => {
            // 16-bit and float images keep their depth where PNG can hold it.
            let img = match img {
                DynamicImage::ImageRgb32F(_) => DynamicImage::ImageRgb16(img.to_rgb16()),
                DynamicImage::ImageRgba32F(_) => DynamicImage::ImageRgba16(img.to_rgba16()),
                other => other.clone(),
            };
            img.write_with_encoder(PngEncoder::new(&mut out)).map_err(enc_err)?;
        }
        MediaFormat::Webp => {
            let img = to_8bit(img);
            img.write_with_encoder(WebPEncoder::new_lossless(&mut out)).map_err(enc_err)?;
        }
        MediaFormat::Gif => {
            let rgba = img.to_rgba8();
            // Speed 10 is the gif crate's suggested balance; the default (1) spends
            // seconds quantising a large frame for no visible gain.
            let mut enc = GifEncoder::new_with_speed(&mut out, 10);
            enc.encode(rgba.as_raw(), w, h, image::ExtendedColorType::Rgba8).map_err(enc_err)?;
        }
    }
    Ok(out)
}

fn to_8bit(img: &DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img.clone(),
        _ if img.color().has_alpha() => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    }
}

/// Composites over white so transparent pixels do not turn black in JPEG.
pub(crate) fn flatten_on_white(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            o[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// Decodes and re-encodes in the same format, which drops EXIF, ICC profiles and
/// text chunks (our encoders never write them). EXIF orientation is applied to the
/// pixels first. JPEG is re-compressed at `DEFAULT_JPEG_QUALITY`; an animated GIF or
/// WebP keeps only its first frame.
pub fn strip_metadata(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>> {
    let format = decode::detect_format(bytes)?;
    let img = decode::decode(bytes, limits)?;
    encode(&img, format, None)
}

// ---------------------------------------------------------------------------
// crop

/// Options for [`crop`]: either a box (`width`, `height`, optional `x`, `y`) or an
/// `aspect` ratio such as "16:9" placed around a focus point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropOptions {
    /// Box left edge (default 0).
    pub x: Option<u32>,
    /// Box top edge (default 0).
    pub y: Option<u32>,
    /// Box width.
    pub width: Option<u32>,
    /// Box height.
    pub height: Option<u32>,
    /// Aspect ratio "W:H"; the largest such rectangle that fits is kept.
    pub aspect: Option<String>,
    /// Horizontal focus for `aspect`, as a fraction of the width (0 left, 0.5 centre).
    pub focus_x: f32,
    /// Vertical focus for `aspect`, as a fraction of the height (0 top, 0.5 centre).
    pub focus_y: f32,
}

impl Default for CropOptions {
    fn default() -> Self {
        CropOptions { x: None, y: None, width: None, height: None, aspect: None, focus_x: 0.5, focus_y: 0.5 }
    }
}

fn parse_aspect(s: &str) -> Result<(f64, f64)> {
    let bad = || MediaError::option("aspect", format!("{s:?} is not of the form W:H, e.g. 16:9"));
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let a: f64 = a.trim().parse().map_err(|_| bad())?;
    let b: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
        return Err(bad());
    }
    Ok((a, b))
}

/// Crops to a box or to an aspect ratio. With `aspect`, the rectangle is centred on
/// the focus point and then pushed back inside the image where it would overflow.
pub fn crop(img: &DynamicImage, opts: &CropOptions) -> Result<DynamicImage> {
    let (w, h) = img.dimensions();
    let (x, y, cw, ch) = match (&opts.aspect, opts.width, opts.height) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(MediaError::option("aspect", "cannot be combined with width/height"));
        }
        (Some(aspect), None, None) => {
            if opts.x.is_some() || opts.y.is_some() {
                return Err(MediaError::option("aspect", "use focus_x/focus_y with aspect, not x/y"));
            }
            let (a, b) = parse_aspect(aspect)?;
            for (field, v) in [("focus_x", opts.focus_x), ("focus_y", opts.focus_y)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(MediaError::option(field, format!("{v} is not in 0..=1")));
                }
            }
            let ratio = a / b;
            let (cw, ch) = if f64::from(w) / f64::from(h) > ratio {
                (((f64::from(h) * ratio).round() as u32).clamp(1, w), h)
            } else {
                (w, ((f64::from(w) / ratio).round() as u32).clamp(1, h))
            };
            let place = |size: u32, len: u32, focus: f32| -> u32 {
                let start = f64::from(size) * f64::from(focus) - f64::from(len) / 2.0;
                (start.round().max(0.0) as u32).min(size - len)
            };
            (place(w, cw, opts.focus_x), place(h, ch, opts.focus_y), cw, ch)
        }
        (None, Some(cw), Some(ch)) => {
            let (x, y) = (opts.x.unwrap_or(0), opts.y.unwrap_or(0));
            if cw == 0 || ch == 0 {
                return Err(MediaError::option(if cw == 0 { "width" } else { "height" }, "must be at least 1"));
            }
            if u64::from(x) + u64::from(cw) > u64::from(w) {
                return Err(MediaError::option("width", format!("x {x} + width {cw} exceeds image width {w}")));
            }
            if u64::from(y) + u64::from(ch) > u64::from(h) {
                return Err(MediaError::option("height", format!("y {y} + height {ch} exceeds image height {h}")));
            }
            (x, y, cw, ch)
        }
        (None, None, _) => {
            return Err(MediaError::option("width", "give width and height, or aspect"));
        }
        (None, Some(_), None) => return Err(MediaError::option("height", "required with width")),
    };
    Ok(img.crop_imm(x, y, cw, ch))
}

// ---------------------------------------------------------------------------
// thumbnail

/// Options for [`thumbnail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThumbnailOptions {
    /// Longest side of the thumbnail in pixels (default 512). Never upscales.
    pub max_side: u32,
    /// JPEG quality 1–100 (default 85).
    pub quality: u8,
}

impl Default for ThumbnailOptions {
    fn default() -> Self {
        ThumbnailOptions { max_side: 512, quality: 85 }
    }
}

/// Dimensions that fit within `max_side` keeping the aspect ratio, never larger than
/// the original.
pub fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let f = f64::from(max_side) / f64::from(longest);
    (scaled(width, f).min(max_side), scaled(height, f).min(max_side))
}

/// Downscaled still image bounded by `max_side`, ready for [`encode`].
pub fn thumbnail_image(img: &DynamicImage, max_side: u32) -> Result<DynamicImage> {
    let max_side = check_side("max_side", max_side)?;
    let (w, h) = img.dimensions();
    let (tw, th) = fit_within(w, h, max_side);
    if (tw, th) == (w, h) {
        return Ok(img.clone());
    }
    // Bilinear with a scale-adapted support is a proper area filter for large
    // reductions and much cheaper than Lanczos3, whose extra sharpness a thumbnail
    // does not show.
    resize_exact(img, tw, th, fir::ResizeAlg::Convolution(fir::FilterType::Bilinear), false)
}

/// JPEG thumbnail whose longest side is at most `max_side`.
pub fn thumbnail(img: &DynamicImage, opts: &ThumbnailOptions) -> Result<Vec<u8>> {
    if !(1..=100).contains(&opts.quality) {
        return Err(MediaError::option("quality", format!("{} is not in 1..=100", opts.quality)));
    }
    let small = thumbnail_image(img, opts.max_side)?;
    encode(&small, MediaFormat::Jpeg, Some(opts.quality))
}

// ---------------------------------------------------------------------------
// watermark

/// Where the watermark is anchored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    /// Top-left corner.
    TopLeft,
    /// Top-right corner.
    TopRight,
    /// Bottom-left corner.
    BottomLeft,
    /// Bottom-right corner (default).
    #[default]
    BottomRight,
    /// Centred; the margin is ignored.
    Center,
}

/// Options for [`watermark`]. Either a logo (passed separately) or `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatermarkOptions {
    /// Anchor position.
    pub position: Position,
    /// Distance from the anchored edges, in pixels.
    pub margin: u32,
    /// Overall opacity 0–1, multiplied with the logo's own alpha.
    pub opacity: f32,
    /// Watermark width as a fraction of the image width (0–1].
    pub scale: f32,
    /// Text to draw instead of a logo (DejaVu Sans Bold).
    pub text: Option<String>,
    /// Text colour as `#rrggbb`.
    pub color: String,
}

impl Default for WatermarkOptions {
    fn default() -> Self {
        WatermarkOptions {
            position: Position::BottomRight,
            margin: 16,
            opacity: 0.5,
            scale: 0.2,
            text: None,
            color: "#ffffff".into(),
        }
    }
}

fn parse_color(s: &str) -> Result<[u8; 3]> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    let bad = || MediaError::option("color", format!("{s:?} is not #rrggbb"));
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let v = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
    Ok([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

impl WatermarkOptions {
    /// Every check [`watermark`] makes that needs no image, so a request can
    /// be refused before it is queued: opacity and scale ranges, the colour's
    /// `#rrggbb` syntax, logo or text (`has_logo`: a logo is given), text length.
    pub fn check(&self, has_logo: bool) -> Result<()> {
        if !(0.0..=1.0).contains(&self.opacity) {
            return Err(MediaError::option("opacity", format!("{} is not in 0..=1", self.opacity)));
        }
        if !(self.scale > 0.0 && self.scale <= 1.0) {
            return Err(MediaError::option("scale", format!("{} is not in (0, 1]", self.scale)));
        }
        let text = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        match (has_logo, text) {
            (true, Some(_)) => return Err(MediaError::option("text", "give either a logo or text, not both")),
            (false, None) => return Err(MediaError::option("text", "give a logo or a text")),
            (false, Some(t)) if t.chars().count() > MAX_WATERMARK_TEXT => {
                return Err(MediaError::option("text", format!("longer than {MAX_WATERMARK_TEXT} characters")));
            }
            _ => {}
        }
        parse_color(&self.color).map(|_| ())
    }
}

/// Longest watermark text accepted; a watermark is a signature, not a caption.
pub const MAX_WATERMARK_TEXT: usize = 200;

/// Blends a logo (any colour type; its alpha is honoured) or a text watermark onto
/// the image. The mark is scaled so its width is `scale` × image width. Output keeps
/// an alpha channel only if the input had one.
pub fn watermark(img: &DynamicImage, logo: Option<&DynamicImage>, opts: &WatermarkOptions) -> Result<DynamicImage> {
    if !(0.0..=1.0).contains(&opts.opacity) {
        return Err(MediaError::option("opacity", format!("{} is not in 0..=1", opts.opacity)));
    }
    if !(opts.scale > 0.0 && opts.scale <= 1.0) {
        return Err(MediaError::option("scale", format!("{} is not in (0, 1]", opts.scale)));
    }
    let (w, h) = img.dimensions();
    let target_w = ((f64::from(w) * f64::from(opts.scale)).round() as u32).max(1);
    let mark: RgbaImage = match (logo, &opts.text) {
        (Some(_), Some(_)) => {
            return Err(MediaError::option("text", "give either a logo or text, not both"));
        }
        (None, None) => {
            return Err(MediaError::option("text", "give a logo or a text"));
        }
        (Some(logo), None) => {
            let (lw, lh) = logo.dimensions();
            let th = scaled(lh, f64::from(target_w) / f64::from(lw)).min(MAX_OUTPUT_SIDE);
            let rgba = DynamicImage::ImageRgba8(logo.to_rgba8());
            resize_exact(&rgba, target_w, th, fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3), false)?
                .into_rgba8()
        }
        (None, Some(text)) => {
            let text = text.trim();
            if text.is_empty() {
                return Err(MediaError::option("text", "is empty"));
            }
            if text.chars().count() > MAX_WATERMARK_TEXT {
                return Err(MediaError::option("text", format!("longer than {MAX_WATERMARK_TEXT} characters")));
            }
            render_text(text, parse_color(&opts.color)?, target_w, h)?
        }
    };
    let (mw, mh) = mark.dimensions();
    let m = opts.margin;
    let (x, y) = match opts.position {
        Position::TopLeft => (m, m),
        Position::TopRight => (w.saturating_sub(mw.saturating_add(m)), m),
        Position::BottomLeft => (m, h.saturating_sub(mh.saturating_add(m))),
        Position::BottomRight => (w.saturating_sub(mw.saturating_add(m)), h.saturating_sub(mh.saturating_add(m))),
        Position::Center => (w.saturating_sub(mw) / 2, h.saturating_sub(mh) / 2),
    };
    let mut base = img.to_rgba8();
    blend_over(&mut base, &mark, x, y, opts.opacity);
    Ok(if img.color().has_alpha() {
        DynamicImage::ImageRgba8(base)
    } else {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(base).into_rgb8())
    })
}

/// Porter-Duff "over" with an extra global opacity; parts of the mark outside the
/// base are clipped.
fn blend_over(base: &mut RgbaImage, mark: &RgbaImage, x: u32, y: u32, opacity: f32) {
    let (bw, bh) = base.dimensions();
    for (mx, my, p) in mark.enumerate_pixels() {
        let (Some(bx), Some(by)) = (x.checked_add(mx), y.checked_add(my)) else {
            continue;
        };
        if bx >= bw || by >= bh {
            continue;
        }
        let a = f32::from(p[3]) / 255.0 * opacity;
        if a <= 0.0 {
            continue;
        }
        let d = base.get_pixel_mut(bx, by);
        let da = f32::from(d[3]) / 255.0;
        let out_a = a + da * (1.0 - a);
        let mut out = [0u8; 4];
        for c in 0..3 {
            let v = (f32::from(p[c]) * a + f32::from(d[c]) * da * (1.0 - a)) / out_a;
            out[c] = v.round().clamp(0.0, 255.0) as u8;
        }
        out[3] = (out_a * 255.0).round() as u8;
        *d = Rgba(out);
    }
}

/// Rasterises one line of text so that it is `target_w` wide (or shorter, if that
/// would make it taller than a third of the image).
fn render_text(text: &str, color: [u8; 3], target_w: u32, image_h: u32) -> Result<RgbaImage> {
    let font = FontRef::try_from_slice(dejavu::sans::bold())
        .map_err(|e| MediaError::option("text", format!("font failed to load: {e}")))?;
    let measure = |px: f32| -> f32 {
        let sf = font.as_scaled(PxScale::from(px));
        let mut width = 0.0;
        let mut prev = None;
        for ch in text.chars() {
            let id = sf.glyph_id(ch);
            if let Some(p) = prev {
                width += sf.kern(p, id);
            }
            width += sf.h_advance(id);
            prev = Some(id);
        }
        width
    };
    let nominal = 100.0;
    let nominal_w = measure(nominal);
    if nominal_w <= 0.0 {
        return Err(MediaError::option("text", "has no visible glyphs"));
    }
    let mut px = nominal * target_w as f32 / nominal_w;
    let max_px = (image_h as f32 / 3.0).max(1.0);
    px = px.min(max_px).max(1.0);
    let sf = font.as_scaled(PxScale::from(px));
    let width = measure(px).ceil().max(1.0) as u32;
    let height = (sf.ascent() - sf.descent()).ceil().max(1.0) as u32;
    let mut out = RgbaImage::from_pixel(width, height, Rgba([color[0], color[1], color[2], 0]));
    let mut caret = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = sf.glyph_id(ch);
        if let Some(p) = prev {
            caret += sf.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, ab_glyph::point(caret, sf.ascent()));
        caret += sf.h_advance(id);
        prev = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, cov| {
                let ox = bounds.min.x as i64 + i64::from(gx);
                let oy = bounds.min.y as i64 + i64::from(gy);
                if ox >= 0 && oy >= 0 && (ox as u32) < width && (oy as u32) < height {
                    let p = out.get_pixel_mut(ox as u32, oy as u32);
                    let a = (cov.clamp(0.0, 1.0) * 255.0).round() as u8;
                    p[3] = p[3].max(a);
                }
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// rotate, flip, blur, invert

/// Options for [`rotate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateOptions {
    /// Clockwise rotation: 90, 180 or 270.
    pub degrees: u32,
}

/// Rotates clockwise by a multiple of 90 degrees (lossless on pixels).
pub fn rotate(img: &DynamicImage, opts: &RotateOptions) -> Result<DynamicImage> {
    match opts.degrees {
        90 => Ok(img.rotate90()),
        180 => Ok(img.rotate180()),
        270 => Ok(img.rotate270()),
        d => Err(MediaError::option("degrees", format!("{d} is not one of 90, 180, 270"))),
    }
}

/// Mirror axis for [`flip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlipDirection {
    /// Mirror left-right.
    Horizontal,
    /// Mirror top-bottom.
    Vertical,
}

/// Options for [`flip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipOptions {
    /// Mirror axis.
    pub direction: FlipDirection,
}

/// Mirrors the image.
pub fn flip(img: &DynamicImage, opts: &FlipOptions) -> DynamicImage {
    match opts.direction {
        FlipDirection::Horizontal => img.fliph(),
        FlipDirection::Vertical => img.flipv(),
    }
}

/// Options for [`blur`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlurOptions {
    /// Gaussian standard deviation in pixels, (0, 100].
    pub sigma: f32,
}

/// Separable Gaussian blur.
pub fn blur(img: &DynamicImage, opts: &BlurOptions) -> Result<DynamicImage> {
    if !(opts.sigma.is_normal() && opts.sigma > 0.0 && opts.sigma <= 100.0) {
        return Err(MediaError::option("sigma", format!("{} is not in (0, 100]", opts.sigma)));
    }
    Ok(img.blur_advanced(GaussianBlurParameters::new_from_sigma(opts.sigma)))
}

/// Inverts colour channels (alpha untouched).
pub fn invert(img: &DynamicImage) -> DynamicImage {
    let mut out = img.clone();
    out.invert();
    out
}

// ---------------------------------------------------------------------------
// delivery

/// A platform's upload limits (each front end declares its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLimits {
    /// Largest accepted file, in bytes.
    pub max_bytes: u64,
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Largest accepted width + height, if the platform caps that too.
    pub max_side_sum: Option<u32>,
}

impl DeliveryLimits {
    fn dims_fit(&self, w: u32, h: u32) -> bool {
        w <= self.max_side
            && h <= self.max_side
            && self.max_side_sum.is_none_or(|s| u64::from(w) + u64::from(h) <= u64::from(s))
    }
}

/// Smallest side we will shrink to before giving up.
const MIN_DELIVERY_SIDE: u32 = 64;

/// Returns bytes that satisfy `limits`: the input unchanged if it already fits (so
/// an animated GIF stays animated), else re-encoded in its own format and, failing
/// that, as JPEG at falling quality, downscaling by 3/4 between rounds. An input that
/// must be re-encoded is read with the default [`DecodeLimits`]; a re-encoded
/// animation keeps only its first frame.
pub fn fit_for_delivery(bytes: &[u8], limits: &DeliveryLimits) -> Result<Vec<u8>> {
    let info = decode::probe(bytes)?;
    if bytes.len() as u64 <= limits.max_bytes && limits.dims_fit(info.width, info.height) {
        return Ok(bytes.to_vec());
    }
    let mut img = decode::decode(bytes, &DecodeLimits::default())?;
    let (w, h) = img.dimensions();
    let mut f = (f64::from(limits.max_side) / f64::from(w.max(h))).min(1.0);
    if let Some(sum) = limits.max_side_sum {
        f = f.min(f64::from(sum) / (f64::from(w) + f64::from(h)));
    }
    if f < 1.0 {
        // floor, not round: rounding up could land one pixel over the limit.
        let tw = ((f64::from(w) * f).floor() as u32).max(1);
        let th = ((f64::from(h) * f).floor() as u32).max(1);
        img = resize_exact(&img, tw, th, DELIVERY_ALG, false)?;
    }
    let candidates: &[(MediaFormat, Option<u8>)] = match info.format {
        MediaFormat::Jpeg => &[(MediaFormat::Jpeg, Some(90)), (MediaFormat::Jpeg, Some(75))],
        other => &[(other, None), (MediaFormat::Jpeg, Some(90)), (MediaFormat::Jpeg, Some(75))],
    };
    loop {
        for &(format, q) in candidates {
            let out = encode(&img, format, q)?;
            if out.len() as u64 <= limits.max_bytes {
                return Ok(out);
            }
        }
        let (cw, ch) = img.dimensions();
        if cw.max(ch) <= MIN_DELIVERY_SIDE {
            return Err(MediaError::TooLarge {
                what: "delivery size in bytes even when downscaled",
                limit: limits.max_bytes,
                actual: bytes.len() as u64,
            });
        }
        // Each round keeps 3/4 of each side (~44% fewer pixels).
        img = resize_exact(&img, (cw * 3 / 4).max(1), (ch * 3 / 4).max(1), DELIVERY_ALG, false)?;
    }
}

const DELIVERY_ALG: fir::ResizeAlg = fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3);
