"""Benchmark inputs made on the spot: speech of an exact length, a presenter video, a random checkpoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise SystemExit("bench: ffmpeg not found on PATH")
    return path


def speech(out: Path, seconds: float, work: Path) -> Path:
    """A mono 16-bit WAV of exactly ``seconds`` of espeak-ng speech (the demo lines, looped or trimmed)."""
    from heygemd import demo

    base = work / "speech-base.wav"
    if not base.is_file():
        demo.speech_wav(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            _ffmpeg(),
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(base),
            "-t",
            f"{seconds:.6f}",
            "-c:a",
            "pcm_s16le",
            str(out),
        ],
        check=True,
    )
    return out


def presenter(out: Path, seconds: float, size: tuple[int, int], fps: float) -> Path:
    """The demo presenter (a moving portrait), H.264, ``seconds`` long."""
    from heygemd import demo

    return demo.presenter_video(out, seconds=seconds, fps=fps, size=size)


def random_checkpoint(out: Path) -> Path:
    """A random Wav2Lip checkpoint in the official layout (tests/engines/checkpoints.py), about 145 MB."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.engines.checkpoints import make_random_checkpoint

    return make_random_checkpoint(out)


def count_frames(path: Path) -> int:
    """Video frames actually in ``path`` (ffprobe packet count)."""
    ffprobe = shutil.which("ffprobe") or "ffprobe"
    result = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(result.stdout.strip().splitlines()[0].strip(","))
