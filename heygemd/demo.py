"""Demo and test media made on the spot: speech from espeak-ng, a presenter from a public-domain portrait.

The presenter is scikit-image's bundled ``astronaut`` photograph (public domain, NASA) with gentle
camera motion; the speech is espeak-ng with pauses of silence between sentences, so the mouth has
something to say and moments to stay closed. Used by ``heygemd demo`` and by the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from heygemd.errors import ToolMissing
from heygemd.pipeline.ffmpeg_argv import ffmpeg_command, media_url, raw_input

DEMO_SENTENCES = (
    "Welcome to the lesson. Today we learn how one recording can speak through many presenters.",
    "Every video in the folder gets the same voice, and the mouth follows every word.",
)


def speech_wav(
    out: Path, sentences: tuple[str, ...] = DEMO_SENTENCES, pause_seconds: float = 1.0, lead_seconds: float = 0.5
) -> Path:
    """Speak ``sentences`` with espeak-ng into a 16-bit mono WAV, with silence before, between and after."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise ToolMissing("espeak-ng not found", hint="sudo apt-get install espeak-ng")
    pieces: list[np.ndarray] = []
    rate = 22050
    with tempfile.TemporaryDirectory() as tmp:
        for n, text in enumerate(sentences):
            part = Path(tmp) / f"{n}.wav"
            subprocess.run([espeak, "-s", "150", "-w", str(part), text], check=True, capture_output=True)
            with wave.open(str(part), "rb") as w:
                rate = w.getframerate()
                pieces.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
    lead = np.zeros(int(lead_seconds * rate), dtype="<i2")
    pause = np.zeros(int(pause_seconds * rate), dtype="<i2")
    samples = [lead]
    for piece in pieces:
        samples += [piece, pause]
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate(samples).tobytes())
    return out


def portrait() -> np.ndarray:
    """The astronaut portrait as a BGR uint8 image, framed like a presenter (head and shoulders)."""
    from skimage import data  # a test/demo dependency only

    rgb = data.astronaut()  # 512x512, face around x 170-300, y 40-220
    return np.ascontiguousarray(rgb[:, :, ::-1])


def presenter_frames(seconds: float, fps: float = 25.0, size: tuple[int, int] = (640, 360)) -> Iterator[np.ndarray]:
    """Yield BGR frames of the portrait with gentle sway and zoom, as a phone on a tripod would see it."""
    import cv2

    width, height = size
    image = portrait()
    # Frame the head: a 16:9 window around the face, scaled so the face is about 40 % of the height.
    cx, cy = 240.0, 160.0
    base_h = 300.0
    n = max(1, int(round(seconds * fps)))
    for i in range(n):
        t = i / fps
        zoom = 1.0 + 0.03 * np.sin(2 * np.pi * t / 4.0)
        dx = 6.0 * np.sin(2 * np.pi * t / 3.0)
        dy = 3.0 * np.sin(2 * np.pi * t / 5.0)
        win_h = base_h / zoom
        win_w = win_h * width / height
        scale = height / win_h
        x0 = cx + dx - win_w / 2
        y0 = cy + dy - win_h / 2
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float32)
        yield cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


H264_ARGS: tuple[str, ...] = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p")


def presenter_video(
    out: Path,
    seconds: float = 4.0,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 360),
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Encode ``presenter_frames`` to ``out`` with ffmpeg (H.264 unless ``extra_args`` say otherwise)."""
    return encode_frames(presenter_frames(seconds, fps, size), out, fps, size, extra_args or H264_ARGS)


def encode_frames(
    frames: Iterable[np.ndarray], out: Path, fps: float, size: tuple[int, int], codec: Sequence[str] = H264_ARGS
) -> Path:
    """Pipe BGR ``frames`` of ``size`` (width, height) into ffmpeg, encoded with ``codec`` arguments to ``out``."""
    width, height = size
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ffmpeg_command([raw_input("bgr24", width, height, str(fps))], [*codec, media_url(out)], overwrite=True)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed to write {out}")
    return out


def make_demo_job(job_dir: Path, presenters: int = 2) -> Path:
    """A complete job folder: one speech WAV and ``presenters`` short videos, plus a .ready marker."""
    job_dir.mkdir(parents=True, exist_ok=True)
    speech_wav(job_dir / "lesson.wav")
    sizes = [(640, 360), (480, 480), (720, 404)]
    for n in range(presenters):
        presenter_video(job_dir / f"presenter-{n + 1}.mp4", seconds=3.0 + n, size=sizes[n % len(sizes)])
    (job_dir / ".ready").touch()
    return job_dir
