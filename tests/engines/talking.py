"""Talking-presenter fixtures: the still portrait made to speak one recording by the engine itself.

The source video's mouth opens and closes on that recording's rhythm; re-driving it with another recording
shows whether the engine sets the mouth (follows the new speech) or adds to it (keeps the old one underneath).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heygemd import demo
from heygemd.engines.mouthwarp import MouthWarpEngine, articulate
from heygemd.pipeline import faces, mouth
from heygemd.pipeline.audio import AudioFeatures, load_audio_features
from heygemd.pipeline.engine_contract import FaceBatch
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video

FPS = 25.0

SCRIPT_A = ("Hello and welcome back. Yesterday we painted the old fence by the river, and it took all afternoon.",)
SCRIPT_B = ("Numbers matter. Seven, twelve, forty. Please write them down now, slowly, one after another.",)


@dataclass(frozen=True)
class Speech:
    wav: Path
    features: AudioFeatures

    def loudness(self, frames: int) -> np.ndarray:
        """The engine's gated speech loudness of the first ``frames`` video frames at ``FPS``."""
        return np.array([m.loudness for m in articulate(self.features.windows(FPS, 0, frames))])


def speech(out: Path, sentences: tuple[str, ...]) -> Speech:
    wav = demo.speech_wav(out, sentences=sentences, pause_seconds=0.6, lead_seconds=0.3)
    return Speech(wav=wav, features=load_audio_features(wav))


def encode(frames: list[np.ndarray], out: Path, fps: float = FPS) -> Path:
    """H.264 (crf 12, close to lossless) of BGR ``frames`` with the real ffmpeg."""
    height, width = frames[0].shape[:2]
    codec = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p")
    return demo.encode_frames(frames, out, fps, (width, height), codec)


def talking_frames(detector: faces.FaceDetector, voice: Speech) -> list[np.ndarray]:
    """The portrait, its mouth set by the engine for each frame of ``voice`` (whole image as the crop).

    Head and shoulders only (320x304): lower down, the suit's patch can pass for a second, larger face.
    """
    image = np.ascontiguousarray(demo.portrait()[8:312, 80:400])
    box = max(detector.detect(image), key=lambda b: float((b[2] - b[0]) * (b[3] - b[1])))
    points = detector.landmarks(image, box).astype(np.float32)
    engine = MouthWarpEngine()
    engine.prepare(voice.features.mel)
    windows = voice.features.windows(FPS)
    out: list[np.ndarray] = []
    for start in range(0, len(windows), 32):
        part = windows[start : start + 32]
        out += engine.generate(FaceBatch(crops=[image] * len(part), landmarks=[points] * len(part), mels=part))
    return out


def inner_lip_gaps(video: Path, detector: faces.FaceDetector) -> np.ndarray:
    """(N,) inner-lip gap (eye distances) of every frame of ``video``, as heygemd's face track measures it."""
    with contextlib.closing(read_frames(probe_video(video))) as frames:
        track = faces.track_faces(frames, detector)
    return mouth.measure_track(track.landmarks)[:, 0]
