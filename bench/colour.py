"""CPU time per frame of the colour conversions around the engine: swscale (what ffmpeg does) against
``heygemd.pipeline.colour`` (what a render does since session 6), side by side in one run.

    .venv/bin/python -m bench.colour [--size 1280x720] [--frames 50]

The input is camera-like footage (the astronaut drifting, sensor grain, H.264 CRF 20, BT.709). ffmpeg runs with
one thread (``-threads 1 -filter_threads 1``) and is timed by its own CPU time (``RUSAGE_CHILDREN``); the OpenCV
conversions run in this process with one OpenCV thread, timed by ``process_time``. So each row is the CPU time of
one core per frame, whatever else the machine is doing (the least of ``--repeat`` rounds).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from heygemd.pipeline.colour import BT709_TV, bgr_to_yuv420p, yuv420p_bytes, yuv420p_to_bgr
from tests.pipeline.media import grainy_clip

_TO_BGR = "scale=flags=accurate_rnd,format=bgr24"
_TO_YUV = "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd,format=yuv420p"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> tuple[bytes, float]:
    """Run ffmpeg with one thread; its output and CPU seconds."""
    before = _children_cpu()
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-filter_threads", "1", *args]
    out = subprocess.run(argv, input=stdin, capture_output=True, check=True).stdout
    return out, _children_cpu() - before


def measure(size: tuple[int, int], frames: int, work: Path) -> dict[str, float]:
    width, height = size
    clip = work / f"grain {width}x{height}.mp4"
    if not clip.is_file():
        grainy_clip(clip, size=size, frames=frames, sigma=5, crf=20)
    decode = ["-threads", "1", "-i", str(clip)]
    yuv_bytes, _ = _ffmpeg([*decode, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
    bgr_bytes, _ = _ffmpeg([*decode, "-vf", _TO_BGR, "-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
    yuv = np.frombuffer(yuv_bytes, np.uint8).reshape(frames, yuv420p_bytes(width, height))
    bgr = np.frombuffer(bgr_bytes, np.uint8).reshape(frames, height, width, 3)
    # The conversions alone: each run against the same run without it, both writing nothing (-f null).
    _, decode_yuv = _ffmpeg([*decode, "-vf", "format=yuv420p", "-f", "null", "-"])
    _, decode_bgr = _ffmpeg([*decode, "-vf", _TO_BGR, "-f", "null", "-"])
    raw_in = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-i", "pipe:0"]
    _, pipe_only = _ffmpeg([*raw_in, "-vf", "format=bgr24", "-f", "null", "-"], bgr.tobytes())
    _, to_yuv_sws = _ffmpeg([*raw_in, "-vf", _TO_YUV, "-f", "null", "-"], bgr.tobytes())

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        out = np.empty((height, width, 3), np.uint8)
        start = time.process_time()
        for frame in yuv:
            yuv420p_to_bgr(frame, width, height, BT709_TV, out)
        to_bgr_ours = time.process_time() - start
        buffer = np.empty(yuv420p_bytes(width, height), np.uint8)
        start = time.process_time()
        for frame in bgr:
            bgr_to_yuv420p(frame, BT709_TV, buffer)
        to_yuv_ours = time.process_time() - start
    finally:
        cv2.setNumThreads(threads)
    per_frame = 1000.0 / frames
    return {
        "decode_to_yuv420p_ms": decode_yuv * per_frame,
        "to_bgr_swscale_ms": (decode_bgr - decode_yuv) * per_frame,
        "to_bgr_opencv_ms": to_bgr_ours * per_frame,
        "to_yuv_swscale_ms": (to_yuv_sws - pipe_only) * per_frame,
        "to_yuv_opencv_ms": to_yuv_ours * per_frame,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.colour", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", help="WxH (repeatable; default 1280x720 and 1920x1080)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is its minimum (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in (args.size or ["1280x720", "1920x1080"])]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-colour-") as work:
        for width, height in sizes:
            rounds = [measure((width, height), args.frames, Path(work)) for _ in range(args.repeat)]
            results[f"{width}x{height}"] = {key: min(r[key] for r in rounds) for key in rounds[0]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"CPU ms per frame, one thread ({args.frames} frames, the least of {args.repeat} rounds)")
    print(f"{'size':>10} {'decode':>7} | {'to BGR: swscale':>15} {'OpenCV':>7} | {'to yuv: swscale':>15} {'OpenCV':>7}")
    for size, r in results.items():
        print(
            f"{size:>10} {r['decode_to_yuv420p_ms']:7.1f} | {r['to_bgr_swscale_ms']:15.1f} {r['to_bgr_opencv_ms']:7.1f}"
            f" | {r['to_yuv_swscale_ms']:15.1f} {r['to_yuv_opencv_ms']:7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
