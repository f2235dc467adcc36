//! Generated test inputs shared by the integration tests.
#![allow(dead_code)]

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use station_media::MediaFormat;
use station_media::ops::encode;

/// Solid-colour RGB image.
pub fn solid(w: u32, h: u32, c: [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(c)))
}

/// Solid-colour RGBA image.
pub fn solid_rgba(w: u32, h: u32, c: [u8; 4]) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_pixel(w, h, Rgba(c)))
}

/// Pseudo-random noise (xorshift), so compressed files are big and every byte matters.
pub fn noise(w: u32, h: u32, seed: u32) -> DynamicImage {
    let mut s = seed | 1;
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        };
        Rgb([next(), next(), next()])
    }))
}

/// `count` vertical stripes of equal width, colours cycling through `colours`.
pub fn stripes(w: u32, h: u32, colours: &[[u8; 3]]) -> DynamicImage {
    let n = colours.len() as u32;
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, _| Rgb(colours[(x * n / w) as usize])))
}

/// Top half `top`, bottom half `bottom`.
pub fn halves(w: u32, h: u32, top: [u8; 3], bottom: [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, y| Rgb(if y < h / 2 { top } else { bottom })))
}

pub fn png(img: &DynamicImage) -> Vec<u8> {
    encode(img, MediaFormat::Png, None).unwrap()
}

pub fn jpeg(img: &DynamicImage) -> Vec<u8> {
    encode(img, MediaFormat::Jpeg, Some(90)).unwrap()
}

/// One PNG chunk with its length and CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

/// A valid small PNG whose IHDR is rewritten to claim `w`×`h` (a decompression
/// bomb's header: tiny file, enormous declared size).
pub fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let real = png(&solid(1, 1, [1, 2, 3]));
    // signature (8) + IHDR length/type (8) + IHDR data (13) + crc (4)
    let mut ihdr = real[16..29].to_vec();
    ihdr[0..4].copy_from_slice(&w.to_be_bytes());
    ihdr[4..8].copy_from_slice(&h.to_be_bytes());
    let mut out = real[..8].to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend_from_slice(&real[33..]);
    out
}

/// Inserts a chunk right after IHDR.
pub fn png_with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = png[..33].to_vec();
    out.extend(png_chunk(kind, data));
    out.extend_from_slice(&png[33..]);
    out
}

/// Inserts a JPEG APPn segment right after SOI.
pub fn jpeg_with_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Channel-wise closeness, for filters that may be off by a rounding step.
pub fn near(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol)
}

pub fn rgb_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.to_rgb8();
    p.get_pixel(x, y).0
}
