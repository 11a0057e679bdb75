"""CPU time per frame of the colour conversions around the engine: swscale (what ffmpeg does) against
``heygemd.pipeline.colour`` (what a render does now), side by side in one run.

    .venv/bin/python -m bench.colour [--size 1280x720 ...] [--video talk.mp4 ...] [--frames 50] [--repeat 3]

The input is camera-like footage made on the spot (the astronaut drifting, sensor grain, H.264 CRF 20, BT.709;
scikit-image), or the first ``--frames`` frames of each ``--video``. ffmpeg runs with
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
from heygemd.pipeline.probe import probe_video

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


def grainy(size: tuple[int, int], frames: int, work: Path) -> Path:
    from tests.pipeline.media import grainy_clip

    folder = work / f"{size[0]}x{size[1]}"
    folder.mkdir()
    return grainy_clip(folder / "grain.mp4", size=size, frames=frames, sigma=5, crf=20)


def measure(clip: Path, frames: int) -> dict[str, float]:
    info = probe_video(clip)
    width, height = info.width, info.height
    frames = min(frames, info.frame_count)
    decode = ["-threads", "1", "-i", str(clip), "-frames:v", str(frames), "-an"]
    crop = f"crop={width}:{height}:0:0,"
    yuv_bytes, _ = _ffmpeg([*decode, "-vf", crop + "format=yuv420p", "-f", "rawvideo", "-"])
    bgr_bytes, _ = _ffmpeg([*decode, "-vf", crop + _TO_BGR, "-f", "rawvideo", "-"])
    yuv = np.frombuffer(yuv_bytes, np.uint8).reshape(frames, yuv420p_bytes(width, height))
    bgr = np.frombuffer(bgr_bytes, np.uint8).reshape(frames, height, width, 3)
    # The conversions alone: each run against the same run without it, both writing nothing (-f null).
    _, decode_yuv = _ffmpeg([*decode, "-vf", crop + "format=yuv420p", "-f", "null", "-"])
    _, decode_bgr = _ffmpeg([*decode, "-vf", crop + _TO_BGR, "-f", "null", "-"])
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
    parser.add_argument("--size", action="append", help="WxH of made footage (repeatable; default 720p and 1080p)")
    parser.add_argument("--video", action="append", type=Path, help="measure on this video instead (repeatable)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is its minimum (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-colour-") as work:
        clips = list(args.video or [])
        if not clips:
            for size in args.size or ["1280x720", "1920x1080"]:
                width, height = (int(v) for v in size.split("x"))
                clips.append(grainy((width, height), args.frames, Path(work)))
        for clip in clips:
            info = probe_video(clip)
            rounds = [measure(clip, args.frames) for _ in range(args.repeat)]
            results[f"{info.width}x{info.height} {clip.stem}"] = {key: min(r[key] for r in rounds) for key in rounds[0]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"CPU ms per frame, one thread ({args.frames} frames, the least of {args.repeat} rounds)")
    columns = ("decode", "to BGR: swscale", "OpenCV", "to yuv: swscale", "OpenCV")
    keys = ("decode_to_yuv420p_ms", "to_bgr_swscale_ms", "to_bgr_opencv_ms", "to_yuv_swscale_ms", "to_yuv_opencv_ms")
    print(f"{'input':<24} " + " ".join(f"{c:>15}" for c in columns))
    for name, r in results.items():
        print(f"{name[:24]:<24} " + " ".join(f"{r[k]:15.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
