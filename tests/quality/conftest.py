"""The quality check's material, made once per session (``media``): a good mouthwarp render of the demo presenter
and the files the check must tell apart from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.face_detectors import DlibDetector
from tests.engines import talking
from tests.quality import media


@dataclass(frozen=True)
class Material:
    root: Path
    speech: AudioFeatures
    presenter: Path
    """The demo presenter, 640x360, 3 s, no sound: its mouth never moves."""
    good: media.Render
    """``presenter`` lip-synced to ``speech`` by mouthwarp (ping-pong to the speech's ~6 s)."""
    talking_a: Path
    """The portrait speaking recording A (its mouth moves to A), no sound."""
    voice_b: talking.Speech


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    root = tmp_path_factory.mktemp("quality")
    detector = DlibDetector()
    speech = media.speech(root / "speech.wav")
    presenter = media.presenter(root / "presenter.mp4")
    good = media.render(presenter, speech, root / "good.mp4", detector, root)
    voice_a = talking.speech(root / "a.wav", talking.SCRIPT_A)
    return Material(
        root=root,
        speech=speech,
        presenter=presenter,
        good=good,
        talking_a=media.talking_source(root / "talking-a.mp4", voice_a, detector),
        voice_b=talking.speech(root / "b.wav", talking.SCRIPT_B),
    )
