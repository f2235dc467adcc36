//! Bounded decoding: type detection from content, header-only probing, and decoding
//! that refuses decompression bombs before any pixel buffer is allocated.
//!
//! Accepted formats are PNG, JPEG, WebP and GIF. Anything else (BMP, TIFF, AVIF, ...)
//! is refused with [`MediaError::UnsupportedFormat`]. For animated GIF, APNG and WebP
//! only the first frame is decoded; [`probe`] counts the frames without decoding any
//! (GIF frames are skipped compressed, APNG `fcTL` and WebP `ANMF` chunks are counted),
//! and [`check_limits`] refuses more frames than [`DecodeLimits::max_frames`] or more
//! pixels over all frames than [`DecodeLimits::max_pixels`]: a consumer that loads
//! every frame (ComfyUI's LoadImage does) decodes frames × width × height pixels.
//!
//! JPEG EXIF orientation is applied while decoding, so the pixels match what viewers
//! show and re-encoding (which drops EXIF) does not turn photos sideways.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{MediaError, Result};

/// Image container formats this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaFormat {
    /// Portable Network Graphics.
    Png,
    /// JPEG (JFIF/EXIF).
    Jpeg,
    /// WebP (lossy or lossless input; lossless output only).
    Webp,
    /// GIF (first frame only when decoding).
    Gif,
}

/// The file extension (without the dot) for media type `mime`: `png`,
/// `jpg`, `webp`, `gif`, or `bin` for anything else. The one mapping every
/// front end uses for file names.
pub fn extension_for_mime(mime: &str) -> &'static str {
    MediaFormat::from_mime(mime).map_or("bin", MediaFormat::extension)
}

impl MediaFormat {
    /// The IANA media type, e.g. `image/png`.
    pub fn mime(self) -> &'static str {
        match self {
            MediaFormat::Png => "image/png",
            MediaFormat::Jpeg => "image/jpeg",
            MediaFormat::Webp => "image/webp",
            MediaFormat::Gif => "image/gif",
        }
    }

    /// The format of IANA media type `mime`, if it is one of these.
    pub fn from_mime(mime: &str) -> Option<MediaFormat> {
        match mime {
            "image/png" => Some(MediaFormat::Png),
            "image/jpeg" => Some(MediaFormat::Jpeg),
            "image/webp" => Some(MediaFormat::Webp),
            "image/gif" => Some(MediaFormat::Gif),
            _ => None,
        }
    }

    /// The usual file extension, without the dot (`jpg` for JPEG).
    pub fn extension(self) -> &'static str {
        match self {
            MediaFormat::Jpeg => "jpg",
            other => other.name(),
        }
    }

    /// Short lowercase name, also the usual file extension.
    pub fn name(self) -> &'static str {
        match self {
            MediaFormat::Png => "png",
            MediaFormat::Jpeg => "jpeg",
            MediaFormat::Webp => "webp",
            MediaFormat::Gif => "gif",
        }
    }

    pub(crate) fn image_format(self) -> ImageFormat {
        match self {
            MediaFormat::Png => ImageFormat::Png,
            MediaFormat::Jpeg => ImageFormat::Jpeg,
            MediaFormat::Webp => ImageFormat::WebP,
            MediaFormat::Gif => ImageFormat::Gif,
        }
    }
}

/// Caps applied before and during decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: u64,
    /// Largest accepted width × height × frames (the pixels of every frame).
    pub max_pixels: u64,
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Most frames an animation (GIF, APNG, WebP) may have; 1 accepts still images only.
    pub max_frames: u64,
}

impl Default for DecodeLimits {
    /// 50 MiB input, 64 megapixels over all frames, 16384 px per side, 100 frames.
    fn default() -> Self {
        DecodeLimits { max_bytes: 50 * 1024 * 1024, max_pixels: 64 * 1024 * 1024, max_side: 16384, max_frames: 100 }
    }
}

/// What the header says about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Container format, detected from the content.
    pub format: MediaFormat,
    /// Width in pixels, as declared by the header.
    pub width: u32,
    /// Height in pixels, as declared by the header.
    pub height: u32,
    /// True for GIF/APNG/WebP with more than one frame.
    pub animated: bool,
    /// Number of frames (1 for a still image), counted without decoding them.
    pub frames: u64,
}

/// Detects the format from the leading magic bytes; names and declared types are
/// never consulted because both are attacker-controlled.
pub fn detect_format(bytes: &[u8]) -> Result<MediaFormat> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => Ok(MediaFormat::Png),
        Ok(ImageFormat::Jpeg) => Ok(MediaFormat::Jpeg),
        Ok(ImageFormat::WebP) => Ok(MediaFormat::Webp),
        Ok(ImageFormat::Gif) => Ok(MediaFormat::Gif),
        Ok(other) => Err(MediaError::UnsupportedFormat(format!(
            "{} images are not accepted (only png, jpeg, webp, gif)",
            other.extensions_str().first().copied().unwrap_or("this kind of")
        ))),
        Err(_) => {
            Err(MediaError::UnsupportedFormat("content is not a recognised image (only png, jpeg, webp, gif)".into()))
        }
    }
}

/// Reads only the headers: format, declared dimensions and the number of frames.
/// No pixel data is decompressed, so this is safe on untrusted input of any size.
pub fn probe(bytes: &[u8]) -> Result<ImageInfo> {
    let format = detect_format(bytes)?;
    let name = format.name();
    let (width, height, frames) = match format {
        MediaFormat::Webp => {
            // image-webp walks the RIFF chunks when opening and counts the `ANMF`
            // (animation frame) chunks without decoding them.
            let decoder = image_webp::WebPDecoder::new(Cursor::new(bytes))
                .map_err(|e| MediaError::from_decode(name, webp_error(e)))?;
            let (w, h) = decoder.dimensions();
            let frames = if decoder.is_animated() { u64::from(decoder.num_frames()).max(1) } else { 1 };
            (w, h, frames)
        }
        MediaFormat::Gif => gif_header(bytes)?,
        MediaFormat::Png | MediaFormat::Jpeg => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
            // Probing must report huge declared sizes rather than fail on them: the
            // caller (decode) turns them into a precise TooLarge error.
            reader.no_limits();
            let (w, h) = reader.into_dimensions().map_err(|e| MediaError::from_decode(name, e))?;
            let frames = if format == MediaFormat::Png { apng_frames(bytes) } else { 1 };
            (w, h, frames)
        }
    };
    Ok(ImageInfo { format, width, height, animated: frames > 1, frames })
}

/// The image crate's own translation of WebP errors (its `from_webp_decode` is private).
fn webp_error(e: image_webp::DecodingError) -> ImageError {
    match e {
        image_webp::DecodingError::IoError(e) => ImageError::IoError(e),
        e => ImageError::Decoding(image::error::DecodingError::new(ImageFormat::WebP.into(), e)),
    }
}

/// Frames of a PNG: 1, or for an APNG the larger of the frame count its `acTL`
/// chunk declares and the `fcTL` (frame control) chunks present — whichever a
/// consumer believes, it is not allowed to load more. Walks chunk headers only.
fn apng_frames(bytes: &[u8]) -> u64 {
    let (mut declared, mut controls) = (0u64, 0u64);
    let mut pos = 8; // after the signature
    while let Some(head) = bytes.get(pos..pos + 8) {
        let len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        match &head[4..8] {
            b"acTL" => {
                if let Some(d) = bytes.get(pos + 8..pos + 12) {
                    declared = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
                }
            }
            b"fcTL" => controls += 1,
            b"IEND" => break,
            _ => {}
        }
        // length, type, data, CRC
        let Some(next) = usize::try_from(len).ok().and_then(|l| pos.checked_add(12)?.checked_add(l)) else { break };
        pos = next;
    }
    declared.max(controls).max(1)
}

/// GIF dimensions and frame count without LZW decoding: the gif crate can hand back
/// compressed frame data, which is enough to count the frames.
fn gif_header(bytes: &[u8]) -> Result<(u32, u32, u64)> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(gif_error)?;
    let (w, h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    if decoder.read_next_frame().map_err(gif_error)?.is_none() {
        return Err(MediaError::Corrupt { format: "gif", reason: "no image frame".into() });
    }
    // A damaged tail after a complete first frame still yields a usable image
    // with the frames read so far.
    let mut frames = 1;
    while let Ok(Some(_)) = decoder.read_next_frame() {
        frames += 1;
    }
    Ok((w, h, frames))
}

fn gif_error(e: gif::DecodingError) -> MediaError {
    match e {
        gif::DecodingError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            MediaError::Truncated { format: "gif" }
        }
        other => {
            let reason = other.to_string();
            if reason.to_ascii_lowercase().contains("eof") || reason.to_ascii_lowercase().contains("end of") {
                MediaError::Truncated { format: "gif" }
            } else {
                MediaError::Corrupt { format: "gif", reason }
            }
        }
    }
}

/// Checks the header against `limits` without decoding any pixels.
pub fn check_limits(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageInfo> {
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(MediaError::TooLarge { what: "input size in bytes", limit: limits.max_bytes, actual: len });
    }
    let info = probe(bytes)?;
    for (what, value) in [("image width", info.width), ("image height", info.height)] {
        if value > limits.max_side {
            return Err(MediaError::TooLarge { what, limit: u64::from(limits.max_side), actual: u64::from(value) });
        }
    }
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > limits.max_pixels {
        return Err(MediaError::TooLarge { what: "image pixel count", limit: limits.max_pixels, actual: pixels });
    }
    if info.frames > limits.max_frames {
        return Err(MediaError::TooLarge {
            what: "number of animation frames",
            limit: limits.max_frames,
            actual: info.frames,
        });
    }
    let all = pixels.saturating_mul(info.frames);
    if all > limits.max_pixels {
        return Err(MediaError::TooLarge {
            what: "pixel count over all frames",
            limit: limits.max_pixels,
            actual: all,
        });
    }
    if info.width == 0 || info.height == 0 {
        return Err(MediaError::Corrupt {
            format: info.format.name(),
            reason: format!("declared size {}x{} is empty", info.width, info.height),
        });
    }
    Ok(info)
}

/// Decodes an image whose type is detected from content, refusing anything over
/// `limits` before allocating. Animated GIF/WebP yield their first frame.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage> {
    let info = check_limits(bytes, limits)?;
    let name = info.format.name();
    if info.format == MediaFormat::Jpeg {
        // zune-jpeg pads a cut-off scan with grey instead of failing; a half-grey photo
        // must not pass silently, so check the structure ourselves.
        check_jpeg_complete(bytes)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), info.format.image_format());
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Worst case is 16 bytes per pixel (RGBA f32); this is the decoder's own backstop
    // in case a codec allocates more than the header implies.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(16));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| MediaError::from_decode(name, e))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| MediaError::from_decode(name, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Walks the JPEG marker segments up to the first scan, then requires an end-of-image
/// marker after it. Walking (rather than searching) skips embedded EXIF thumbnails,
/// whose own end markers would otherwise hide a truncated main image.
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let truncated = MediaError::Truncated { format: "jpeg" };
    let mut pos = 2; // after SOI
    loop {
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1; // fill bytes
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(if pos + 1 >= bytes.len() {
                truncated
            } else {
                MediaError::Corrupt { format: "jpeg", reason: format!("expected a marker at byte {pos}") }
            });
        };
        if marker == 0xDA {
            break;
        }
        if marker == 0xD9 {
            return Err(MediaError::Corrupt { format: "jpeg", reason: "end of image before any scan data".into() });
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(pos + 2), bytes.get(pos + 3)) else {
            return Err(truncated);
        };
        pos += 2 + usize::from(u16::from_be_bytes([hi, lo]));
        if pos >= bytes.len() {
            return Err(truncated);
        }
    }
    if bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]) { Ok(()) } else { Err(truncated) }
}
