//! Native image operations: resize, crop, convert, thumbnail, watermark, rotate/flip, fit for delivery.

mod common;

use common::*;
use image::{DynamicImage, GenericImageView, Rgb, RgbImage};
use station_media::ops::*;
use station_media::{DecodeLimits, MediaError, MediaFormat, decode, probe};

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const GREEN: [u8; 3] = [0, 255, 0];

fn opts<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

fn field_of(err: MediaError) -> &'static str {
    match err {
        MediaError::InvalidOption { field, .. } => field,
        other => panic!("expected InvalidOption, got {other:?}"),
    }
}

#[test]
fn resize_cover_keeps_the_centre() {
    // blue | red | blue: cover into a square must keep only the red middle third.
    let img = stripes(300, 100, &[BLUE, RED, BLUE]);
    let out = resize(&img, &opts(r#"{"width": 50, "height": 50, "fit": "cover"}"#)).unwrap();
    assert_eq!(out.dimensions(), (50, 50));
    assert_eq!(rgb_at(&out, 25, 25), RED);
    assert!(near(rgb_at(&out, 3, 25), RED, 8), "{:?}", rgb_at(&out, 3, 25));
}

#[test]
fn resize_contain_fill_single_side_and_scale() {
    let img = stripes(400, 200, &[RED, BLUE]);
    let contain = resize(&img, &opts(r#"{"width": 100, "height": 100}"#)).unwrap();
    assert_eq!(contain.dimensions(), (100, 50));
    assert_eq!(rgb_at(&contain, 10, 25), RED);
    assert_eq!(rgb_at(&contain, 90, 25), BLUE);
    let fill = resize(&img, &opts(r#"{"width": 100, "height": 100, "fit": "fill"}"#)).unwrap();
    assert_eq!(fill.dimensions(), (100, 100));
    let by_width = resize(&img, &opts(r#"{"width": 50}"#)).unwrap();
    assert_eq!(by_width.dimensions(), (50, 25));
    let by_height = resize(&img, &opts(r#"{"height": 50}"#)).unwrap();
    assert_eq!(by_height.dimensions(), (100, 50));
    let scaled = resize(&img, &opts(r#"{"scale": 0.5, "filter": "bilinear"}"#)).unwrap();
    assert_eq!(scaled.dimensions(), (200, 100));
    assert_eq!(rgb_at(&scaled, 50, 50), RED);
}

#[test]
fn resize_nearest_creates_no_new_colours() {
    let img = stripes(9, 9, &[RED, GREEN, BLUE]);
    let out = resize(&img, &opts(r#"{"width": 30, "height": 30, "filter": "nearest", "fit": "fill"}"#)).unwrap();
    for p in out.to_rgb8().pixels() {
        assert!([RED, GREEN, BLUE].contains(&p.0), "new colour {:?}", p.0);
    }
}

#[test]
fn resize_catmullrom_keeps_alpha_images_alpha() {
    let img = solid_rgba(20, 20, [10, 20, 30, 128]);
    let out = resize(&img, &opts(r#"{"width": 10, "filter": "catmullrom"}"#)).unwrap();
    assert!(out.color().has_alpha());
    assert_eq!(out.to_rgba8().get_pixel(5, 5).0, [10, 20, 30, 128]);
}

#[test]
fn resize_option_errors_name_the_field() {
    let img = solid(10, 10, RED);
    assert_eq!(field_of(resize(&img, &opts("{}")).unwrap_err()), "width");
    assert_eq!(field_of(resize(&img, &opts(r#"{"width": 5, "scale": 2.0}"#)).unwrap_err()), "scale");
    assert_eq!(field_of(resize(&img, &opts(r#"{"width": 0}"#)).unwrap_err()), "width");
    assert!(matches!(resize(&img, &opts(r#"{"width": 100000}"#)), Err(MediaError::TooLarge { what: "width", .. })));
    assert!(serde_json::from_str::<ResizeOptions>(r#"{"fit": "stretch"}"#).is_err());
}

#[test]
fn crop_box() {
    let img = halves(100, 80, GREEN, RED);
    let out = crop(&img, &opts(r#"{"x": 10, "y": 30, "width": 20, "height": 20}"#)).unwrap();
    assert_eq!(out.dimensions(), (20, 20));
    assert_eq!(rgb_at(&out, 0, 0), GREEN); // y 30 < 40
    assert_eq!(rgb_at(&out, 0, 19), RED); // y 49 >= 40
    let err = crop(&img, &opts(r#"{"x": 90, "width": 20, "height": 5}"#)).unwrap_err();
    assert_eq!(field_of(err), "width");
    let err = crop(&img, &opts(r#"{"width": 20}"#)).unwrap_err();
    assert_eq!(field_of(err), "height");
}

#[test]
fn crop_aspect_centred_and_anchored() {
    let img = halves(100, 100, GREEN, RED);
    let centred = crop(&img, &opts(r#"{"aspect": "2:1"}"#)).unwrap();
    assert_eq!(centred.dimensions(), (100, 50));
    assert_eq!(rgb_at(&centred, 50, 0), GREEN);
    assert_eq!(rgb_at(&centred, 50, 49), RED);
    let top = crop(&img, &opts(r#"{"aspect": "2:1", "focus_y": 0.0}"#)).unwrap();
    assert!(top.to_rgb8().pixels().all(|p| p.0 == GREEN));
    let bottom = crop(&img, &opts(r#"{"aspect": "2:1", "focus_y": 1.0}"#)).unwrap();
    assert!(bottom.to_rgb8().pixels().all(|p| p.0 == RED));
    let wide = crop(&solid(1000, 1000, RED), &opts(r#"{"aspect": "16:9"}"#)).unwrap();
    assert_eq!(wide.dimensions(), (1000, 563));
    let err = crop(&img, &opts(r#"{"aspect": "wide"}"#)).unwrap_err();
    assert_eq!(field_of(err), "aspect");
    let err = crop(&img, &opts(r#"{"aspect": "1:1", "focus_x": 2.0}"#)).unwrap_err();
    assert_eq!(field_of(err), "focus_x");
}

#[test]
fn thumbnail_is_a_bounded_jpeg_that_never_upscales() {
    let img = stripes(800, 400, &[RED, BLUE]);
    let bytes = thumbnail(&img, &ThumbnailOptions::default()).unwrap();
    let info = probe(&bytes).unwrap();
    assert_eq!((info.format, info.width, info.height), (MediaFormat::Jpeg, 512, 256));
    let back = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert!(near(rgb_at(&back, 100, 128), RED, 12));
    assert!(near(rgb_at(&back, 400, 128), BLUE, 12));

    let small = thumbnail(&solid(40, 30, GREEN), &opts(r#"{"max_side": 512}"#)).unwrap();
    assert_eq!(probe(&small).unwrap().width, 40);
    assert_eq!(field_of(thumbnail(&img, &opts(r#"{"quality": 0}"#)).unwrap_err()), "quality");
}

#[test]
fn logo_watermark_blends_exactly_where_expected() {
    let base = solid(200, 100, BLUE);
    let logo = solid(20, 10, RED);
    let out = watermark(
        &base,
        Some(&logo),
        &opts(r#"{"position": "bottom-right", "margin": 5, "opacity": 0.5, "scale": 0.1}"#),
    )
    .unwrap();
    assert_eq!(out.dimensions(), (200, 100));
    assert!(!out.color().has_alpha());
    // The logo covers x 175..195, y 85..95.
    for (x, y) in [(175, 85), (185, 90), (194, 94)] {
        assert_eq!(rgb_at(&out, x, y), [128, 0, 128], "at {x},{y}");
    }
    for (x, y) in [(174, 90), (195, 90), (185, 84), (185, 95), (0, 0), (100, 50)] {
        assert_eq!(rgb_at(&out, x, y), BLUE, "at {x},{y}");
    }
}

#[test]
fn logo_watermark_scales_and_honours_logo_alpha() {
    let base = solid(400, 200, [0, 0, 0]);
    // Half-transparent white logo, 10x10, scaled to 0.25 * 400 = 100 wide.
    let logo = solid_rgba(10, 10, [255, 255, 255, 128]);
    let out =
        watermark(&base, Some(&logo), &opts(r#"{"position": "top-left", "margin": 0, "opacity": 1.0, "scale": 0.25}"#))
            .unwrap();
    let v = rgb_at(&out, 50, 50)[0];
    assert!(v.abs_diff(128) <= 1, "got {v}");
    assert_eq!(rgb_at(&out, 101, 50), [0, 0, 0]);
    assert_eq!(rgb_at(&out, 50, 101), [0, 0, 0]);
}

#[test]
fn text_watermark_draws_in_the_requested_corner() {
    let base = solid(400, 200, [0, 0, 0]);
    let out = watermark(
        &base,
        None,
        &opts(r##"{"text": "Station", "color": "#ffffff", "opacity": 1.0, "position": "top-left", "margin": 10, "scale": 0.5}"##),
    )
    .unwrap()
    .to_rgb8();
    let lit: Vec<(u32, u32)> =
        out.enumerate_pixels().filter(|(_, _, p)| p.0[0] > 128).map(|(x, y, _)| (x, y)).collect();
    assert!(lit.len() > 200, "only {} text pixels", lit.len());
    let max_x = lit.iter().map(|p| p.0).max().unwrap();
    let min_x = lit.iter().map(|p| p.0).min().unwrap();
    let min_y = lit.iter().map(|p| p.1).min().unwrap();
    assert!(min_x >= 10 && min_y >= 10, "text starts at {min_x},{min_y}");
    // The text is scaled to about half the image width.
    assert!((150..=215).contains(&max_x), "text ends at x={max_x}");
    assert!(lit.iter().all(|&(_, y)| y < 120), "text leaked downwards");
}

#[test]
fn watermark_errors_name_the_field() {
    let base = solid(10, 10, BLUE);
    let logo = solid(2, 2, RED);
    let e = watermark(&base, None, &WatermarkOptions::default()).unwrap_err();
    assert_eq!(field_of(e), "text");
    let e = watermark(&base, Some(&logo), &opts(r#"{"opacity": 1.5}"#)).unwrap_err();
    assert_eq!(field_of(e), "opacity");
    let e = watermark(&base, Some(&logo), &opts(r#"{"scale": 0}"#)).unwrap_err();
    assert_eq!(field_of(e), "scale");
    let e = watermark(&base, None, &opts(r#"{"text": "hi", "color": "red"}"#)).unwrap_err();
    assert_eq!(field_of(e), "color");
    assert!(serde_json::from_str::<WatermarkOptions>(r#"{"position": "middle"}"#).is_err());
}

fn marked() -> DynamicImage {
    // 20x10 black with a red pixel at the top-left corner.
    let mut img = RgbImage::new(20, 10);
    img.put_pixel(0, 0, Rgb(RED));
    DynamicImage::ImageRgb8(img)
}

#[test]
fn rotate_and_flip() {
    let r90 = rotate(&marked(), &opts(r#"{"degrees": 90}"#)).unwrap();
    assert_eq!(r90.dimensions(), (10, 20));
    assert_eq!(rgb_at(&r90, 9, 0), RED);
    let r180 = rotate(&marked(), &opts(r#"{"degrees": 180}"#)).unwrap();
    assert_eq!(rgb_at(&r180, 19, 9), RED);
    let r270 = rotate(&marked(), &opts(r#"{"degrees": 270}"#)).unwrap();
    assert_eq!(rgb_at(&r270, 0, 19), RED);
    let e = rotate(&marked(), &opts(r#"{"degrees": 45}"#)).unwrap_err();
    assert_eq!(field_of(e), "degrees");

    let h = flip(&marked(), &opts(r#"{"direction": "horizontal"}"#));
    assert_eq!(rgb_at(&h, 19, 0), RED);
    assert_eq!(rgb_at(&h, 0, 0), [0, 0, 0]);
    let v = flip(&marked(), &opts(r#"{"direction": "vertical"}"#));
    assert_eq!(rgb_at(&v, 0, 9), RED);
}

#[test]
fn blur_softens_edges_and_keeps_flat_areas() {
    let img = stripes(60, 20, &[[0, 0, 0], [255, 255, 255]]);
    let out = blur(&img, &opts(r#"{"sigma": 2.0}"#)).unwrap();
    let edge = rgb_at(&out, 30, 10)[0];
    assert!(edge > 40 && edge < 215, "edge {edge}");
    assert_eq!(rgb_at(&out, 5, 10), [0, 0, 0]);
    assert_eq!(rgb_at(&out, 55, 10), [255, 255, 255]);
    assert_eq!(field_of(blur(&img, &opts(r#"{"sigma": 0}"#)).unwrap_err()), "sigma");
}

#[test]
fn invert_flips_channels() {
    let out = invert(&solid(2, 2, [10, 20, 30]));
    assert_eq!(rgb_at(&out, 1, 1), [245, 235, 225]);
}

#[test]
fn convert_between_formats() {
    let img = noise(16, 8, 11);
    let webp = convert(&img, &opts(r#"{"format": "webp"}"#)).unwrap();
    assert_eq!(probe(&webp).unwrap().format, MediaFormat::Webp);
    // lossless: every pixel survives
    assert_eq!(decode(&webp, &DecodeLimits::default()).unwrap().to_rgb8(), img.to_rgb8());
    let png_bytes = convert(&img, &opts(r#"{"format": "png"}"#)).unwrap();
    assert_eq!(decode(&png_bytes, &DecodeLimits::default()).unwrap().to_rgb8(), img.to_rgb8());
    let gif = convert(&solid(8, 8, RED), &opts(r#"{"format": "gif"}"#)).unwrap();
    assert_eq!(rgb_at(&decode(&gif, &DecodeLimits::default()).unwrap(), 4, 4), RED);
    let hi = convert(&img, &opts(r#"{"format": "jpeg", "quality": 95}"#)).unwrap();
    let lo = convert(&img, &opts(r#"{"format": "jpeg", "quality": 10}"#)).unwrap();
    assert_eq!(probe(&lo).unwrap().format, MediaFormat::Jpeg);
    assert!(lo.len() < hi.len(), "quality has no effect");

    let e = convert(&img, &opts(r#"{"format": "webp", "lossy": true}"#)).unwrap_err();
    assert_eq!(field_of(e), "lossy");
    let e = convert(&img, &opts(r#"{"format": "jpeg", "quality": 101}"#)).unwrap_err();
    assert_eq!(field_of(e), "quality");
    assert!(serde_json::from_str::<ConvertOptions>(r#"{"format": "tiff"}"#).is_err());
}

#[test]
fn jpeg_flattens_transparency_onto_white() {
    let bytes = encode(&solid_rgba(8, 8, [0, 0, 0, 0]), MediaFormat::Jpeg, None).unwrap();
    let back = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert!(near(rgb_at(&back, 4, 4), [255, 255, 255], 2));
}

#[test]
fn strip_metadata_removes_text_chunks_and_exif() {
    let img = noise(12, 12, 21);
    let tagged = png_with_chunk(&png(&img), b"tEXt", b"Comment\0secret prompt");
    assert!(contains(&tagged, b"secret prompt"));
    assert_eq!(decode(&tagged, &DecodeLimits::default()).unwrap().to_rgb8(), img.to_rgb8());
    let clean = strip_metadata(&tagged, &DecodeLimits::default()).unwrap();
    assert!(!contains(&clean, b"secret prompt"));
    assert!(!contains(&clean, b"tEXt"));
    assert_eq!(probe(&clean).unwrap().format, MediaFormat::Png);
    assert_eq!(decode(&clean, &DecodeLimits::default()).unwrap().to_rgb8(), img.to_rgb8());

    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(b"MM\0*\0\0\0\x08\0\0GPS-secret");
    let tagged = jpeg_with_segment(&jpeg(&img), 0xE1, &exif);
    assert!(contains(&tagged, b"GPS-secret"));
    let clean = strip_metadata(&tagged, &DecodeLimits::default()).unwrap();
    assert!(!contains(&clean, b"Exif"));
    assert!(!contains(&clean, b"GPS-secret"));
    assert_eq!(probe(&clean).unwrap().width, 12);
}

#[test]
fn fit_for_delivery_passes_small_files_through_untouched() {
    let bytes = png(&solid(50, 50, RED));
    let limits = DeliveryLimits { max_bytes: 10 * 1024 * 1024, max_side: 16_384, max_side_sum: None };
    let out = fit_for_delivery(&bytes, &limits).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn fit_for_delivery_shrinks_to_the_byte_limit() {
    let bytes = png(&noise(600, 600, 5));
    assert!(bytes.len() > 1_000_000);
    let limits = DeliveryLimits { max_bytes: 60_000, max_side: 10_000, max_side_sum: None };
    let out = fit_for_delivery(&bytes, &limits).unwrap();
    assert!(out.len() <= 60_000, "{} bytes", out.len());
    probe(&out).unwrap();
}

#[test]
fn fit_for_delivery_respects_side_and_sum_limits() {
    let bytes = png(&stripes(900, 600, &[RED, BLUE]));
    let limits = DeliveryLimits { max_bytes: 10_000_000, max_side: 800, max_side_sum: Some(1000) };
    let out = fit_for_delivery(&bytes, &limits).unwrap();
    let info = probe(&out).unwrap();
    assert!(info.width <= 800 && info.height <= 800);
    assert!(info.width + info.height <= 1000);
    assert!(info.width + info.height >= 990, "shrunk more than needed");
    // Still a PNG: it fitted without switching to JPEG.
    assert_eq!(info.format, MediaFormat::Png);
}
