"""Tiny media generated on the spot with the real ffmpeg, and checks on it, for the probe/frames/encode tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
requires_ffmpeg = pytest.mark.skipif(FFMPEG is None or FFPROBE is None, reason="ffmpeg/ffprobe not installed")

W, H, FPS = 160, 120, 25


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True)


def lavfi_clip(
    out: Path, *codec: str, size: str = f"{W}x{H}", seconds: float = 1, rate: int = FPS, vf: str | None = None
) -> Path:
    """testsrc2 encoded with ``codec`` args (default H.264 yuv420p)."""
    codec = codec or ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
    source = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    ffmpeg("-f", "lavfi", "-i", source, *(["-vf", vf] if vf else []), *codec, str(out))
    return out


def lavfi_reference(size: str = f"{W}x{H}", seconds: float = 1, rate: int = FPS) -> list[np.ndarray]:
    """The exact testsrc2 frames, as BGR, without any encoding."""
    width, height = map(int, size.split("x"))
    raw = subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={rate}:duration={seconds}",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3))


def sine(out: Path, seconds: float, *codec: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *codec, str(out))
    return out


def ffprobe_json(path: Path) -> dict:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def ffmpeg_children(parent: int | None = None, names: tuple[str, ...] = ("ffmpeg",)) -> list[int]:
    """PIDs of ffmpeg processes (running or zombie; or of the other ``names``) whose parent is ``parent``
    (default: this test process)."""
    me = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm in names:
            found.append(int(entry.name))
    return found


def has_encoder(name: str) -> bool:
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.startswith(" "))


BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")


def grainy_clip(
    out: Path,
    size: tuple[int, int] = (640, 360),
    frames: int = 20,
    sigma: float = 5.0,
    crf: int = 20,
    tags: tuple[str, ...] = BT709_TAGS,
) -> Path:
    """Camera-like footage: skimage's astronaut drifting and zooming slowly, with Gaussian sensor grain of
    ``sigma`` levels, encoded as a phone would (H.264 yuv420p at ``crf``, tagged ``tags``: BT.709 limited range)."""
    import cv2
    from skimage import data

    from heygemd.demo import encode_frames

    width, height = size
    picture = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(1)

    def drifting() -> Iterator[np.ndarray]:
        for i in range(frames):
            scale = max(width, height) / 512 * 1.25 * (1.0 + 0.002 * i)
            dx, dy = 3 * np.sin(i / 9), 2 * np.cos(i / 13)
            warp = np.float32([[scale, 0, width / 2 - 256 * scale + dx], [0, scale, height / 2 - 230 * scale + dy]])
            frame = cv2.warpAffine(picture, warp, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            yield np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)

    codec = ("-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p")
    return encode_frames(drifting(), out, FPS, size, (*codec, *tags))


def png_bomb(out: Path, width: int, height: int) -> Path:
    """A black RGB PNG of ``width`` x ``height``: about 3000 times smaller than the picture it decodes to
    (16000x16000: 0.7 MB on disk, 768 MB decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    rows = (b"\0" * (1 + 3 * width)) * 250  # each row: filter byte 0, then black pixels
    data = b"".join(packer.compress(rows) for _ in range(height // 250))
    data += packer.compress(rows[: (1 + 3 * width) * (height % 250)]) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    out.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return out


def children_peak_rss_mb(code: str, *args: str) -> float:
    """Run ``code`` (Python, ``sys.argv[1:]`` = ``args``) in a fresh interpreter and return the peak resident memory
    of the largest process it started (ffprobe, ffmpeg), in MB; the interpreter's own memory is not counted."""
    import sys

    report = "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", code + report, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def not_regular_files(folder: Path) -> Iterator[tuple[Path, str]]:
    """Names a user can drop that are not files, each with what ``open_regular`` says it is: a FIFO, a socket,
    a folder and a character device."""
    import socket

    fifo = folder / "pipe.mp4"
    os.mkfifo(fifo)
    yield fifo, "is a named pipe (FIFO), not a regular file"
    sock = folder / "socket.mp4"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock))
        yield sock, "is a socket, not a regular file"
    folder_named_like_a_video = folder / "folder.mp4"
    folder_named_like_a_video.mkdir()
    yield folder_named_like_a_video, "is a folder, not a regular file"
    yield Path("/dev/zero"), "is a character device, not a regular file"
