#!/usr/bin/env python3
"""Pillow baseline for benches/media.rs, on the same input files.

Usage: python3 pillow_baseline.py [DIR]   (DIR defaults to <tmp>/station-media-bench,
the folder the Rust bench writes input_4096.png and input_2048.png into; run the
Rust bench first). Needs `pip install pillow`.
"""

import io
import os
import sys
import tempfile
import time

from PIL import Image


def timed(name, iters, fn):
    """Median time per call, as in the Rust bench (plus the minimum)."""
    fn()  # warm-up, as in the Rust bench
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    median = samples[iters // 2]
    print(f"{name:<44} median {median * 1e3:>8.2f} ms  min {samples[0] * 1e3:>8.2f} ms  "
          f"{1 / median:>7.2f} op/s  ({iters} runs)")
    return median


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "station-media-bench")
    big = open(os.path.join(folder, "input_4096.png"), "rb").read()
    mid = open(os.path.join(folder, "input_2048.png"), "rb").read()
    print(f"Pillow {Image.__version__}, inputs in {folder}")

    def decode(data):
        im = Image.open(io.BytesIO(data))
        im.load()
        return im

    def thumb_from(im, copy=True):
        # thumbnail() works in place; copy only when the source is reused.
        if copy:
            im = im.copy()
        # Pillow's own fast path: reduce() by an integer factor, then BICUBIC.
        im.thumbnail((512, 512))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        return out.getvalue()

    timed("thumbnail 4096 PNG -> 512 JPEG (end to end)", 10, lambda: thumb_from(decode(big), copy=False))
    timed("  of which: decode 4096 PNG", 10, lambda: decode(big))
    big_img = decode(big)
    timed("  of which: downscale + JPEG encode", 20, lambda: thumb_from(big_img))

    mid_img = decode(mid)
    timed("resize 2048^2 -> 1024^2 lanczos3", 30, lambda: mid_img.resize((1024, 1024), Image.LANCZOS))


if __name__ == "__main__":
    main()
