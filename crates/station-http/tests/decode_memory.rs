//! Issue 17, item 4: decoding memory is bounded by `media.decode_concurrency`.
//! Fifty parallel worst-case uploads (16-bit RGBA PNGs at `media.max_pixels`,
//! a few KB each but 8 bytes a pixel decoded) keep the process's peak
//! resident memory within README's formula. Its own test binary: the peak
//! (VmHWM) is per process, and no other test may share it.

mod common;

use common::serve;
use reqwest::StatusCode;
use station_media::image::{DynamicImage, ImageBuffer, ImageFormat, Rgba};
use station_testkit::testing;

/// One of `VmRSS`/`VmHWM` from /proc/self/status, in bytes.
fn proc_status(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A 16-bit RGBA PNG of `w`×`h`, one colour: tiny on the wire, 8 bytes a pixel decoded.
fn png16(w: u32, h: u32) -> Vec<u8> {
    let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_pixel(w, h, Rgba([9000, 30000, 50000, 65535]));
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgba16(img).write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_worst_case_uploads_stay_within_the_memory_bound() {
    let db = testing::sqlite().await;
    let (side, max_bytes, slots) = (2000u32, 1024 * 1024u64, 2u64);
    let max_pixels = u64::from(side) * u64::from(side);
    let s = serve(&db, false, |c| {
        c.media.max_pixels = max_pixels;
        c.media.max_bytes = max_bytes;
        c.media.decode_concurrency = slots;
    })
    .await;
    let image = png16(side, side);
    assert!((image.len() as u64) < max_bytes, "{} bytes", image.len());
    // Warm up: threads, pools and the allocator's arenas exist before measuring.
    let a = s.upload(&s.alice_key, image.clone(), "warm.png").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);

    // README "Security": the decoding part of serve's worst case is
    // decode_concurrency × (2 × max_bytes + 16 × max_pixels): the decoded
    // 16-bit frame (8 bytes a pixel) and the copies made while checking it.
    // Without the slots, fifty would decode 50 × 32 MB at once.
    let bound = slots * (2 * max_bytes + 16 * max_pixels);
    // Fifty connections and their requests, and whatever else moves meanwhile.
    let slack = 32 * 1024 * 1024;
    let rss_before = proc_status("VmRSS:");
    // Reset the peak to the current size (Linux: "5" clears VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let uploads = (0..50).map(|i| {
        let s = &s;
        let image = image.clone();
        async move { s.upload(&s.alice_key, image, &format!("big-{i}.png")).await }
    });
    let answers = futures::future::join_all(uploads).await;
    let peak = proc_status("VmHWM:");
    let mut created = 0;
    for a in &answers {
        match a.status {
            StatusCode::CREATED => created += 1,
            // Busy beyond the slots: the error shape with Retry-After.
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(a.code(), "busy", "{}", a.body);
                assert!(a.headers.contains_key("retry-after"), "{:?}", a.headers);
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert!(created >= 1, "some uploads went through");
    let grown = peak.saturating_sub(rss_before);
    let mb = |b: u64| b / (1024 * 1024);
    eprintln!(
        "50 uploads of {side}x{side} RGBA16 ({created} created): peak grew {} MiB; bound {} MiB + {} MiB slack",
        mb(grown),
        mb(bound),
        mb(slack)
    );
    assert!(
        grown <= bound + slack,
        "peak resident memory grew by {} MiB, over the bound of {} MiB (+{} MiB slack)",
        mb(grown),
        mb(bound),
        mb(slack)
    );
    s.stop().await;
}
