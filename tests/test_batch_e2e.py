"""`heygemd batch` end to end on real media: the product's main promise, checked on the output pixels.

Speech with silences (espeak-ng) drives a presenter photo, a presenter video longer than the audio and one
shorter (ping-pong), plus a broken file. Checked: one mp4 per good input, as long as the audio, with AAC; the mouth
moves where there is speech and stays as it was in silence; the upper face is untouched; the broken file and a
video without a face fail alone with messages naming them; exit status 1 because inputs failed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import portrait, presenter_video, speech_wav
from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.faces import DlibDetector

FPS = 25.0


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def decode_all(path: Path) -> list[np.ndarray]:
    from heygemd.pipeline.frames import read_frames
    from heygemd.pipeline.probe import probe_video

    return list(read_frames(probe_video(path)))


def face_regions(image: np.ndarray) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(mouth region, upper-face region) of the face in ``image``, from its landmarks."""
    detector = DlibDetector()
    boxes = detector.detect(image)
    assert boxes, "no face in the reference image"
    marks = detector.landmarks(image, boxes[0])
    mouth = marks[48:68]
    mx1, my1 = mouth.min(axis=0)
    mx2, my2 = mouth.max(axis=0)
    brows = marks[17:27]
    eyes_bottom = marks[36:48, 1].max()
    mouth_region = (slice(int(my1), int(my2) + 1), slice(int(mx1), int(mx2) + 1))
    upper = (
        slice(int(brows[:, 1].min()), int(eyes_bottom) + 1),
        slice(int(brows[:, 0].min()), int(brows[:, 0].max()) + 1),
    )
    return mouth_region, upper


def speech_and_silence_frames(audio: Path, n_frames: int) -> tuple[list[int], list[int]]:
    """Output frame indices well inside speech (loud) and well inside silence (digital zero, +-0.2 s)."""
    wav = decode_audio(audio)
    per_frame = 16000 / FPS
    loud, quiet = [], []
    for i in range(n_frames):
        lo, hi = int(max(0, (i - 5) * per_frame)), int(min(len(wav), (i + 6) * per_frame))
        window = np.abs(wav[lo:hi])
        centre = np.abs(wav[int(i * per_frame) : int((i + 1) * per_frame)])
        if window.size and window.max() < 1e-4:
            quiet.append(i)
        elif centre.size and np.sqrt(np.mean(centre**2)) > 0.05:
            loud.append(i)
    return loud, quiet


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, heygemd_bin):
    root = tmp_path_factory.mktemp("batch e2e 批处理")
    audio = speech_wav(
        root / "讲话 speech.wav",
        sentences=("Hello everyone, welcome to the lesson.",),
        pause_seconds=0.8,
        lead_seconds=0.8,
    )
    videos = root / "presenters"
    videos.mkdir()
    cv2.imwrite(str(videos / "photo.png"), portrait()[0:360, 60:420])
    presenter_video(videos / "long.mp4", seconds=6.0, fps=FPS, size=(480, 270))
    presenter_video(videos / "short 短.mp4", seconds=1.2, fps=FPS, size=(320, 180))
    (videos / "broken.mp4").write_text("this is not a video")
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25:duration=1",
            "-pix_fmt",
            "yuv420p",
            str(videos / "no face.mp4"),
        ],
        check=True,
    )
    out = root / "out"
    proc = subprocess.run(
        [
            str(heygemd_bin),
            "batch",
            "--audio",
            str(audio),
            "--videos",
            str(videos),
            "--out",
            str(out),
            "--engine",
            "mouthwarp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "HEYGEMD_LOGGING__FORMAT": "json",
            "HEYGEMD_PATHS__INBOX": str(root / "inbox"),
            "HEYGEMD_PATHS__OUTBOX": str(root / "outbox"),
        },
    )
    return root, audio, videos, out, proc


def test_batch_reports_the_broken_video_and_exits_1(batch_run):
    _, _, _, out, proc = batch_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 of 5 videos done, 2 failed" in proc.stdout
    failed = sorted(line for line in proc.stdout.splitlines() if "FAILED" in line)
    assert len(failed) == 2
    assert "broken.mp4" in failed[0] and "[NOT_MEDIA]" in failed[0]
    assert "no face.mp4" in failed[1] and "[NO_FACE]" in failed[1]
    assert "what to do:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in out.glob("*.mp4")) == ["long.mp4", "photo.mp4", "short 短.mp4"]
    assert not list(out.glob(".*")), "temporary files left in the output folder"


@pytest.mark.parametrize("name", ["long.mp4", "photo.mp4", "short 短.mp4"])
def test_outputs_are_as_long_as_the_audio_with_aac(batch_run, name):
    _, audio, _, out, _ = batch_run
    audio_duration = len(decode_audio(audio)) / 16000
    probe = ffprobe(out / name)
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert kinds["video"]["codec_name"] == "h264" and kinds["video"]["pix_fmt"] == "yuv420p"
    assert kinds["audio"]["codec_name"] == "aac"
    assert abs(float(probe["format"]["duration"]) - audio_duration) <= 1 / FPS + 0.03
    assert (out / name).with_suffix(".jpg").is_file(), "poster missing"


def test_talking_photo_mouth_moves_in_speech_and_rests_in_silence(batch_run):
    _, audio, videos, out, _ = batch_run
    source = cv2.imread(str(videos / "photo.png"))
    mouth, upper = face_regions(source)
    frames = decode_all(out / "photo.mp4")
    loud, quiet = speech_and_silence_frames(audio, len(frames))
    assert len(loud) > 10 and len(quiet) > 10

    def change(frame: np.ndarray, region: tuple[slice, slice]) -> float:
        return float(np.mean(np.abs(frame[region].astype(np.int16) - source[region].astype(np.int16))))

    speech_mouth = np.median([change(frames[i], mouth) for i in loud])
    silence_mouth = np.median([change(frames[i], mouth) for i in quiet])
    upper_face = max(change(frames[i], upper) for i in loud + quiet)
    assert speech_mouth > 12, f"mouth barely moves in speech (mean change {speech_mouth:.1f})"
    assert silence_mouth < 4, f"mouth not at rest in silence (mean change {silence_mouth:.1f})"
    assert upper_face < 4, f"upper face changed (mean change {upper_face:.1f})"


def test_video_longer_than_audio_is_trimmed_and_lip_synced(batch_run):
    _, audio, videos, out, _ = batch_run
    source = decode_all(videos / "long.mp4")
    frames = decode_all(out / "long.mp4")
    assert len(frames) < len(source)
    mouth, upper = face_regions(source[0])
    loud, quiet = speech_and_silence_frames(audio, len(frames))

    def change(i: int, region: tuple[slice, slice]) -> float:
        return float(np.mean(np.abs(frames[i][region].astype(np.int16) - source[i][region].astype(np.int16))))

    # the presenter sways a few pixels, so compare frame i with source frame i (trim: same index)
    assert np.median([change(i, mouth) for i in loud]) > 2 * np.median([change(i, mouth) for i in quiet]) + 4
    assert max(change(i, upper) for i in loud + quiet) < 4
