//! Bounded decoding: every format, limits checked from the header before allocating, broken files.

mod common;

use common::*;
use image::codecs::gif::GifEncoder;
use image::{Delay, Frame, GenericImageView, Rgba, RgbaImage};
use station_media::{DecodeLimits, MediaError, MediaFormat, decode, probe};

#[test]
fn format_comes_from_content_not_from_a_name() {
    let bytes = png(&solid(7, 5, [10, 20, 30]));
    let info = probe(&bytes).unwrap();
    assert_eq!(info.format, MediaFormat::Png);
    assert_eq!((info.width, info.height, info.animated), (7, 5, false));
    let jpg = jpeg(&solid(9, 4, [10, 20, 30]));
    assert_eq!(probe(&jpg).unwrap().format, MediaFormat::Jpeg);
}

#[test]
fn decoding_returns_the_pixels() {
    let img = decode(&png(&halves(4, 4, [255, 0, 0], [0, 0, 255])), &DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (4, 4));
    assert_eq!(rgb_at(&img, 0, 0), [255, 0, 0]);
    assert_eq!(rgb_at(&img, 3, 3), [0, 0, 255]);
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 200, "the bomb is a tiny file");
    // probe reports the claim without allocating
    let info = probe(&bomb).unwrap();
    assert_eq!((info.width, info.height), (100_000, 100_000));
    match decode(&bomb, &DecodeLimits::default()) {
        Err(MediaError::TooLarge { what, limit, actual }) => {
            assert_eq!(what, "image width");
            assert_eq!(limit, 16384);
            assert_eq!(actual, 100_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn pixel_count_limit_applies_even_when_each_side_is_allowed() {
    let bomb = png_claiming(10_000, 10_000);
    match decode(&bomb, &DecodeLimits::default()) {
        Err(MediaError::TooLarge { what, actual, .. }) => {
            assert_eq!(what, "image pixel count");
            assert_eq!(actual, 100_000_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn input_byte_limit() {
    let bytes = png(&noise(64, 64, 1));
    let limits = DecodeLimits { max_bytes: 100, ..DecodeLimits::default() };
    assert!(matches!(
        decode(&bytes, &limits),
        Err(MediaError::TooLarge { what: "input size in bytes", limit: 100, .. })
    ));
}

#[test]
fn truncated_png_is_a_clear_error() {
    let bytes = png(&noise(128, 128, 7));
    let cut = &bytes[..bytes.len() / 2];
    let err = decode(cut, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, MediaError::Truncated { format: "png" }), "got {err:?}");
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn truncated_jpeg_is_a_clear_error() {
    let bytes = jpeg(&noise(128, 128, 9));
    let cut = &bytes[..bytes.len() * 6 / 10];
    let err = decode(cut, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, MediaError::Truncated { format: "jpeg" }), "got {err:?}");
}

#[test]
fn every_cut_point_fails_cleanly_without_panicking() {
    let limits = DecodeLimits::default();
    for (name, bytes) in [("png", png(&noise(40, 40, 3))), ("jpeg", jpeg(&noise(40, 40, 4)))] {
        // Cutting off the last byte of a PNG loses only IEND's CRC and is fine to
        // accept; everything earlier must fail.
        for cut in (1..bytes.len() - 12).step_by(7) {
            let res = decode(&bytes[..cut], &limits);
            assert!(res.is_err(), "{name} cut at {cut} of {} decoded", bytes.len());
        }
    }
}

#[test]
fn corrupt_data_is_corrupt_not_a_panic() {
    let mut bytes = png(&noise(64, 64, 5));
    // Scramble the compressed pixel data but keep the chunk structure (CRCs now fail).
    let n = bytes.len();
    for b in &mut bytes[60..n - 20] {
        *b ^= 0x5A;
    }
    let err = decode(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, MediaError::Corrupt { format: "png", .. } | MediaError::Truncated { .. }), "got {err:?}");
}

#[test]
fn unknown_and_unaccepted_formats_are_refused() {
    let err = probe(b"hello, this is not an image at all").unwrap_err();
    assert!(matches!(err, MediaError::UnsupportedFormat(_)), "got {err:?}");
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 60]);
    let err = decode(&bmp, &DecodeLimits::default()).unwrap_err();
    match err {
        MediaError::UnsupportedFormat(msg) => assert!(msg.contains("bmp"), "{msg}"),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

fn two_frame_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let red = RgbaImage::from_pixel(6, 4, Rgba([255, 0, 0, 255]));
        let green = RgbaImage::from_pixel(6, 4, Rgba([0, 255, 0, 255]));
        enc.encode_frames(vec![
            Frame::from_parts(red, 0, 0, Delay::from_numer_denom_ms(100, 1)),
            Frame::from_parts(green, 0, 0, Delay::from_numer_denom_ms(100, 1)),
        ])
        .unwrap();
    }
    out
}

#[test]
fn animated_gif_is_detected_and_decodes_to_its_first_frame() {
    let gif = two_frame_gif();
    let info = probe(&gif).unwrap();
    assert_eq!(info.format, MediaFormat::Gif);
    assert!(info.animated);
    assert_eq!((info.width, info.height), (6, 4));
    let img = decode(&gif, &DecodeLimits::default()).unwrap();
    assert_eq!(rgb_at(&img, 3, 2), [255, 0, 0]);

    let still = station_media::ops::encode(&solid(3, 3, [0, 0, 255]), MediaFormat::Gif, None).unwrap();
    assert!(!probe(&still).unwrap().animated);
}

#[test]
fn webp_is_probed_and_decoded() {
    let bytes = station_media::ops::encode(&solid(5, 3, [1, 200, 3]), MediaFormat::Webp, None).unwrap();
    let info = probe(&bytes).unwrap();
    assert_eq!((info.format, info.width, info.height, info.animated), (MediaFormat::Webp, 5, 3, false));
    let img = decode(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(rgb_at(&img, 4, 2), [1, 200, 3]);
}

/// Minimal big-endian EXIF block holding only an Orientation tag.
fn exif_orientation(value: u8) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0*\0\0\0\x08".to_vec();
    exif.extend_from_slice(&[0, 1]); // one IFD entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    exif
}

#[test]
fn exif_orientation_is_applied_so_stripping_does_not_turn_photos() {
    // 20x10, red left half; orientation 6 means "rotate 90° clockwise to display".
    let img = common::stripes(20, 10, &[[255, 0, 0], [0, 0, 255]]);
    let tagged = jpeg_with_segment(&jpeg(&img), 0xE1, &exif_orientation(6));
    assert_eq!(probe(&tagged).unwrap().width, 20, "header size is the stored one");
    let shown = decode(&tagged, &DecodeLimits::default()).unwrap();
    assert_eq!(shown.dimensions(), (10, 20));
    // The red left edge ends up on top after a clockwise turn.
    assert!(near(rgb_at(&shown, 5, 2), [255, 0, 0], 40), "{:?}", rgb_at(&shown, 5, 2));
    assert!(near(rgb_at(&shown, 5, 17), [0, 0, 255], 40));

    let clean = station_media::ops::strip_metadata(&tagged, &DecodeLimits::default()).unwrap();
    assert!(!contains(&clean, b"Exif"));
    let info = probe(&clean).unwrap();
    assert_eq!((info.width, info.height), (10, 20));
}

#[test]
fn random_damage_never_panics() {
    let inputs = [
        png(&noise(24, 24, 1)),
        jpeg(&noise(24, 24, 2)),
        station_media::ops::encode(&noise(24, 24, 3), MediaFormat::Webp, None).unwrap(),
        two_frame_gif(),
    ];
    let limits = DecodeLimits::default();
    let mut s: u32 = 12345;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let mut failures = 0;
    for input in &inputs {
        for _ in 0..150 {
            let mut bytes = input.clone();
            for _ in 0..1 + rand() % 4 {
                let i = (rand() as usize) % bytes.len();
                bytes[i] = rand() as u8;
            }
            if rand() % 3 == 0 {
                bytes.truncate((rand() as usize) % bytes.len());
            }
            // Either outcome is fine; a panic fails the test.
            let _ = probe(&bytes);
            if decode(&bytes, &limits).is_err() {
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "damage was never detected");
}
