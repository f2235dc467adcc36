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

/// A GIF of `n` frames of `w`×`h`, alternating two colours.
fn gif_frames(n: usize, w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let frames = (0..n).map(|i| {
            let c = if i % 2 == 0 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 0, 255, 255]) };
            Frame::from_parts(RgbaImage::from_pixel(w, h, c), 0, 0, Delay::from_numer_denom_ms(40, 1))
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

/// The chunks of a PNG as (type, data).
fn png_chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = vec![];
    let mut pos = 8;
    while pos + 8 <= png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[pos + 4..pos + 8].try_into().unwrap();
        out.push((kind, png[pos + 8..pos + 8 + len].to_vec()));
        pos += 12 + len;
    }
    out
}

/// An APNG of `n` frames of 4×4 (the default image is frame 0), built by hand
/// (the image crate writes no APNG): acTL, then fcTL before IDAT and a
/// fcTL + fdAT pair per further frame.
fn apng(n: u32) -> Vec<u8> {
    let still = png(&solid(4, 4, [0, 128, 0]));
    let chunks = png_chunks(&still);
    let idat: Vec<u8> = chunks.iter().filter(|(k, _)| k == b"IDAT").flat_map(|(_, d)| d.clone()).collect();
    let fctl = |seq: u32| {
        let mut d = vec![];
        for v in [seq, 4, 4, 0, 0] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&[0, 10, 0, 100, 0, 0]);
        d
    };
    let mut out = still[..8].to_vec();
    let mut seq = 0;
    for (kind, data) in &chunks {
        match kind {
            b"IHDR" => {
                out.extend(png_chunk(b"IHDR", data));
                let mut actl = n.to_be_bytes().to_vec();
                actl.extend_from_slice(&0u32.to_be_bytes());
                out.extend(png_chunk(b"acTL", &actl));
            }
            b"IDAT" if seq == 0 => {
                out.extend(png_chunk(b"fcTL", &fctl(0)));
                seq = 1;
                out.extend(png_chunk(b"IDAT", &idat));
                for _ in 1..n {
                    out.extend(png_chunk(b"fcTL", &fctl(seq)));
                    let mut fdat = (seq + 1).to_be_bytes().to_vec();
                    fdat.extend_from_slice(&idat);
                    out.extend(png_chunk(b"fdAT", &fdat));
                    seq += 2;
                }
            }
            b"IDAT" => {}
            other => out.extend(png_chunk(other, data)),
        }
    }
    out
}

/// An animated WebP of `n` frames of 4×4 built by hand: VP8X with the
/// animation flag, ANIM, and one ANMF per frame holding a lossless frame.
fn animated_webp(n: u32) -> Vec<u8> {
    let still = station_media::ops::encode(&solid(4, 4, [200, 10, 10]), MediaFormat::Webp, None).unwrap();
    let frame = &still[12..]; // the VP8L chunk, header included
    let chunk = |kind: &[u8; 4], data: &[u8]| {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let mut vp8x = vec![0x02, 0, 0, 0];
    vp8x.extend(u24(3));
    vp8x.extend(u24(3));
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    for _ in 0..n {
        let mut anmf = vec![];
        for v in [0, 0, 3, 3, 100] {
            anmf.extend(u24(v));
        }
        anmf.push(0);
        anmf.extend_from_slice(frame);
        body.extend(chunk(b"ANMF", &anmf));
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// Issue 17, item 3: animations are counted frame by frame from their
/// headers (GIF, APNG, animated WebP) and refused over `max_frames`, or when
/// the pixels of all frames together exceed `max_pixels`, before decoding.
#[test]
fn animation_frames_are_counted_and_limited_before_decoding() {
    use station_media::decode::check_limits;
    let cases =
        [("gif", gif_frames(300, 8, 8), 300u64, 64u64), ("apng", apng(5), 5, 16), ("webp", animated_webp(7), 7, 16)];
    for (name, bytes, frames, frame_pixels) in cases {
        let info = probe(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((info.frames, info.animated), (frames, true), "{name}");
        let within = DecodeLimits { max_frames: frames, ..DecodeLimits::default() };
        check_limits(&bytes, &within).unwrap_or_else(|e| panic!("{name}: {e}"));
        decode(&bytes, &within).unwrap_or_else(|e| panic!("{name}: {e}"));
        let fewer = DecodeLimits { max_frames: frames - 1, ..DecodeLimits::default() };
        for result in [check_limits(&bytes, &fewer).map(|_| ()), decode(&bytes, &fewer).map(|_| ())] {
            match result {
                Err(MediaError::TooLarge { what: "number of animation frames", limit, actual }) => {
                    assert_eq!((limit, actual), (frames - 1, frames), "{name}");
                }
                other => panic!("{name}: expected too many frames, got {other:?}"),
            }
        }
        // Each frame fits the pixel limit; all of them together do not.
        let pixels =
            DecodeLimits { max_frames: frames, max_pixels: frame_pixels * frames - 1, ..DecodeLimits::default() };
        match check_limits(&bytes, &pixels) {
            Err(MediaError::TooLarge { what: "pixel count over all frames", actual, .. }) => {
                assert_eq!(actual, frame_pixels * frames, "{name}");
            }
            other => panic!("{name}: expected too many pixels over all frames, got {other:?}"),
        }
    }
    // Still images are one frame.
    for still in [png(&solid(3, 3, [1, 2, 3])), jpeg(&solid(3, 3, [1, 2, 3])), gif_frames(1, 3, 3)] {
        assert_eq!(probe(&still).unwrap().frames, 1);
        check_limits(&still, &DecodeLimits { max_frames: 1, ..DecodeLimits::default() }).unwrap();
    }
}
