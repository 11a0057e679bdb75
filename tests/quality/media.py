"""The quality check's test material, made on the spot with the real engine, dlib and ffmpeg.

- a good render: the demo presenter (the astronaut portrait) lip-synced by mouthwarp to espeak-ng speech;
- the same render with its sound shifted (ffmpeg ``-itsoffset``, stream copy of the picture);
- a frozen mouth: the presenter video muxed with the speech, never applied;
- a talking source: the portrait made to speak recording A (``tests.engines.talking``), muxed with recording B
  (foreign audio) or re-driven by mouthwarp with B;
- a jittered and a seamed render: the good render's lower face shaken from frame to frame, or brightened, inside
  the blend mask (what an engine with frame-by-frame generation, or without a colour match, leaves).

Also used by ``python -m bench.quality`` (the calibration set of bench/README.md).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygemd import demo
from heygemd.engines.mouthwarp import MouthWarpEngine
from heygemd.pipeline.audio import AudioFeatures, load_audio_features
from heygemd.pipeline.face_detectors import FaceDetector
from heygemd.pipeline.frames import frame_schedule, read_frames
from heygemd.pipeline.probe import probe_video
from heygemd.pipeline.render import mouth_mask
from heygemd.pipeline.run import RenderOptions, RenderResult, render_video
from tests.engines import talking

SENTENCES = ("Hello and welcome back to the lesson.", "Today we paint the old fence by the river, slowly.")
"""About 6 s of speech with a lead and a pause of silence (the check needs both speech and silence)."""


def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    assert found, "ffmpeg is not installed"
    return found


def speech(out: Path, sentences: tuple[str, ...] = SENTENCES) -> AudioFeatures:
    """espeak-ng speech with 0.5 s of silence before and 1 s between and after the sentences."""
    return load_audio_features(demo.speech_wav(out, sentences=sentences, pause_seconds=1.0, lead_seconds=0.5))


def mux(video: Path, audio: Path, out: Path, *, shift_s: float = 0.0, loop_video: bool = False) -> Path:
    """``video``'s picture (stream copy, or looped and re-encoded) with ``audio`` as its sound, the sound shifted by
    ``shift_s`` (ffmpeg ``-itsoffset``: positive = later than the picture); as long as the picture, or with
    ``loop_video`` as long as the sound."""
    picture = ["-stream_loop", "-1", "-i", str(video)] if loop_video else ["-i", str(video)]
    codec = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-shortest"] if loop_video else ["-c:v", "copy"]
    subprocess.run(
        [ffmpeg(), "-v", "error", "-y", *picture, "-itsoffset", f"{shift_s:.3f}", "-i", str(audio)]
        + ["-map", "0:v:0", "-map", "1:a:0", *codec, "-c:a", "aac", str(out)],
        check=True,
    )
    return out


@dataclass(frozen=True)
class Render:
    source: Path
    audio: AudioFeatures
    result: RenderResult

    @property
    def output(self) -> Path:
        return self.result.output


def render(source: Path, audio: AudioFeatures, out: Path, detector: FaceDetector, work: Path) -> Render:
    """``source`` lip-synced to ``audio`` by mouthwarp through the whole pipeline (real ffmpeg, dlib track, paste)."""
    result = render_video(
        source,
        audio,
        out,
        MouthWarpEngine(),
        detector,
        options=RenderOptions(),
        cache_dir=work / "cache",
        work_dir=work / "spool",
    )
    return Render(source, audio, result)


def presenter(out: Path, size: tuple[int, int] = (640, 360), seconds: float = 3.0) -> Path:
    return demo.presenter_video(out, seconds=seconds, size=size)


def talking_source(out: Path, voice: talking.Speech, detector: FaceDetector) -> Path:
    """The portrait speaking ``voice`` (its mouth set by mouthwarp frame by frame), without sound."""
    return talking.encode(talking.talking_frames(detector, voice), out)


def _edited(good: Render, out: Path, edit: Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Path:
    """``good``'s output with ``edit(i, frame, mask, landmarks)`` applied to every frame with a face, re-encoded
    (near-lossless) with the same sound. The mask is the blend mask of the render (from the presenter's track)."""
    info = probe_video(good.output)
    track = good.result.track
    assert track is not None
    schedule = list(frame_schedule(len(track), info.frame_count, good.result.loop_mode))

    def frames() -> Iterator[np.ndarray]:
        with contextlib.closing(read_frames(info)) as decoded:
            for i, frame in enumerate(decoded):
                source = schedule[min(i, len(schedule) - 1)]
                if track.has_face(source):
                    marks = track.landmarks[source]
                    frame = edit(i, frame, mouth_mask(marks, frame.shape[:2]), marks)
                yield frame

    silent = out.with_name(out.stem + "-silent.mp4")
    talking.encode(list(frames()), silent, fps=info.fps)
    return mux(silent, good.audio.path, out)


def jittered(good: Render, out: Path, shake: float = 0.04, seed: int = 7) -> Path:
    """``good`` with its lower face moved by a random offset every frame (``shake`` eye distances, RMS per axis)."""
    import cv2

    from heygemd.pipeline.mouth import face_frame

    rng = np.random.default_rng(seed)

    def edit(_i: int, frame: np.ndarray, mask: np.ndarray, marks: np.ndarray) -> np.ndarray:
        dx, dy = rng.normal(0.0, shake * face_frame(marks).scale, size=2)
        moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), frame.shape[1::-1], borderMode=1)
        weight = mask[..., None]
        return np.clip(np.rint(frame * (1 - weight) + moved * weight), 0, 255).astype(np.uint8)

    return _edited(good, out, edit)


def seamed(good: Render, out: Path, step: float = 12.0) -> Path:
    """``good`` with its lower face ``step`` levels brighter inside the blend mask (no colour match)."""

    def edit(_i: int, frame: np.ndarray, mask: np.ndarray, _marks: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(frame + step * mask[..., None]), 0, 255).astype(np.uint8)

    return _edited(good, out, edit)
