"""`heygemd single --checkpoint` end to end with a random checkpoint in the official layout.

Random weights draw noise, not a mouth, so this checks the plumbing the real weights go through: the
checkpoint loads, every frame of the audio is generated and pasted inside the feathered lower-face mask only,
and the output is as long as the audio.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cv2
import numpy as np

from heygemd.demo import portrait, speech_wav
from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video
from tests.engines.checkpoints import make_random_checkpoint
from tests.test_batch_e2e import face_regions


def test_single_with_a_wav2lip_checkpoint(tmp_path: Path, heygemd_bin: Path) -> None:
    checkpoint = make_random_checkpoint(tmp_path / "wav2lip_gan.pth")
    audio = speech_wav(tmp_path / "hello.wav", sentences=("Hello.",), pause_seconds=0.2, lead_seconds=0.2)
    photo = tmp_path / "presenter photo.png"
    cv2.imwrite(str(photo), portrait()[0:360, 60:420])
    out = tmp_path / "out" / "talking.mp4"
    proc = subprocess.run(
        [
            str(heygemd_bin),
            "single",
            "--audio",
            str(audio),
            "--video",
            str(photo),
            "--out",
            str(out),
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HEYGEMD_LOGGING__FORMAT": "json", "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = probe_video(out)
    assert abs(info.duration - len(decode_audio(audio)) / 16000) <= 1 / info.fps + 0.03
    source = cv2.imread(str(photo))
    mouth, upper = face_regions(source)
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count

    def change(frame: np.ndarray, region: tuple[slice, slice]) -> float:
        return float(np.mean(np.abs(frame[region].astype(np.int16) - source[region].astype(np.int16))))

    assert min(change(f, mouth) for f in frames) > 10, "the generated mouth was not pasted"
    assert max(change(f, upper) for f in frames) < 4, "the paste reached the upper face"


def test_a_broken_checkpoint_fails_with_a_clear_message(tmp_path: Path, heygemd_bin: Path) -> None:
    bad = tmp_path / "wav2lip_gan.pth"
    bad.write_bytes(b"<html>403 Forbidden</html>")
    audio = speech_wav(tmp_path / "hello.wav", sentences=("Hi.",), pause_seconds=0.1, lead_seconds=0.1)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), portrait())
    proc = subprocess.run(
        [
            str(heygemd_bin),
            "single",
            "--audio",
            str(audio),
            "--video",
            str(photo),
            "--out",
            str(tmp_path / "o.mp4"),
            "--checkpoint",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HEYGEMD_LOGGING__FORMAT": "json", "HEYGEMD_PATHS__INBOX": str(tmp_path / "inbox")},
    )
    assert proc.returncode == 1
    assert "[BAD_CHECKPOINT]" in proc.stdout and str(bad) in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
