//! Throughput of the two hot paths, measured with plain `Instant`.
//!
//! Run: `cargo bench -p station-media --bench media`. The generated inputs are
//! written to `$STATION_MEDIA_BENCH_DIR` (default: `<tmp>/station-media-bench`) so
//! `benches/pillow_baseline.py <that dir>` can time Pillow on the very same files.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::{DynamicImage, Rgb, RgbImage};
use station_media::ops::{self, ResizeOptions, ThumbnailOptions};
use station_media::{DecodeLimits, MediaFormat, decode};

/// Photo-like content: smooth gradients plus mild noise, so PNG compresses about as
/// well as it does on generated art (pure noise would make decoding unrealistically
/// expensive, flat colour unrealistically cheap).
fn generate(side: u32) -> DynamicImage {
    let mut s: u32 = 0x9E37_79B9;
    DynamicImage::ImageRgb8(RgbImage::from_fn(side, side, |x, y| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let n = (s & 0x0F) as u8;
        let fx = x as f32 / side as f32;
        let fy = y as f32 / side as f32;
        let r = (fx * 200.0) as u8;
        let g = ((fx * fy * 6.0).sin().abs() * 200.0) as u8;
        let b = (fy * 180.0 + 40.0 * (fx * 20.0).cos()) as u8;
        Rgb([r.saturating_add(n), g.saturating_add(n), b.saturating_add(n)])
    }))
}

/// Median time per call (the machine is shared, so the median resists load spikes
/// from other processes better than the mean); the minimum is printed too.
fn time<F: FnMut()>(name: &str, iters: usize, mut f: F) -> Duration {
    f(); // warm-up: page in code, size the resizer's buffers
    let mut samples: Vec<Duration> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[iters / 2];
    println!(
        "{name:<44} median {:>8.2} ms  min {:>8.2} ms  {:>7.2} op/s  ({iters} runs)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        1.0 / median.as_secs_f64()
    );
    median
}

fn main() {
    let dir = std::env::var_os("STATION_MEDIA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("station-media-bench"));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let big_path = dir.join("input_4096.png");
    let mid_path = dir.join("input_2048.png");
    for (path, side) in [(&big_path, 4096), (&mid_path, 2048)] {
        if !path.exists() {
            let bytes = ops::encode(&generate(side), MediaFormat::Png, None).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
    println!("inputs in {}", dir.display());
    let big = std::fs::read(&big_path).unwrap();
    let mid = std::fs::read(&mid_path).unwrap();
    println!(
        "input_4096.png {} bytes, input_2048.png {} bytes, rayon threads {}",
        big.len(),
        mid.len(),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    let limits = DecodeLimits::default();
    let thumb_opts = ThumbnailOptions { max_side: 512, quality: 85 };

    time("thumbnail 4096 PNG -> 512 JPEG (end to end)", 10, || {
        let img = decode(black_box(&big), &limits).unwrap();
        black_box(ops::thumbnail(&img, &thumb_opts).unwrap());
    });
    time("  of which: decode 4096 PNG", 10, || {
        black_box(decode(black_box(&big), &limits).unwrap());
    });
    let big_img = decode(&big, &limits).unwrap();
    time("  of which: downscale + JPEG encode", 20, || {
        black_box(ops::thumbnail(black_box(&big_img), &thumb_opts).unwrap());
    });

    let mid_img = decode(&mid, &limits).unwrap();
    let resize_opts = ResizeOptions { width: Some(1024), height: Some(1024), ..ResizeOptions::default() };
    time("resize 2048^2 -> 1024^2 lanczos3", 30, || {
        black_box(ops::resize(black_box(&mid_img), &resize_opts).unwrap());
    });
}
