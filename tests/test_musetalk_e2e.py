"""MuseTalk end to end with a tiny random model folder in the official layout (``models/musetalk/``).

Random weights draw noise, not a mouth, so this checks the plumbing the real weights go through: ``auto`` picks
MuseTalk when its files are complete, Whisper prompts are computed once per job, every frame of the audio is
generated and pasted inside the feathered lower-face mask only (nothing above the nose changes), the output is as
long as the audio, and a presenter reused with a new audio skips face detection and VAE encoding.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from heygemd.demo import portrait, presenter_video, speech_wav
from heygemd.lipsync import LipSyncSession
from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.frames import read_frames
from heygemd.pipeline.probe import probe_video
from heygemd.settings import Settings
from tests.daemon.daemon_process import Daemon, stop_daemon
from tests.test_batch_e2e import face_regions


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("musetalk-media")
    return {
        "speech": speech_wav(root / "speech.wav", sentences=("Hello.",), pause_seconds=0.1, lead_seconds=0.1),
        "other": speech_wav(root / "other.wav", sentences=("New.",), pause_seconds=0.1, lead_seconds=0.1),
        "video": presenter_video(root / "anna.mp4", seconds=1.0, size=(320, 180)),
    }


def models_with(musetalk_folder: Path, root: Path) -> Path:
    models = root / "models"
    models.mkdir(parents=True)
    (models / "musetalk").symlink_to(musetalk_folder, target_is_directory=True)
    return models


def test_session_renders_and_reuses_the_presenter(
    musetalk_folder: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "paths": {
                "inbox": tmp_path / "inbox",
                "outbox": tmp_path / "outbox",
                "models": models_with(musetalk_folder, tmp_path),
            },
            "engine": {"device": "cpu", "batch_size": 8},
            "video": {"preset": "ultrafast"},
        }
    )
    session = LipSyncSession(settings)
    assert session.engine_name == "musetalk"  # auto: the files are complete
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), portrait()[0:360, 60:420])

    audio = session.audio(media["speech"])
    assert audio.prompts is not None
    first = session.render(photo, audio, tmp_path / "out" / "photo.mp4")
    assert first.cached_presenter is False and first.cached_faces is False
    assert first.timings["prepare"] > 0 and first.timings["detect"] > 0
    info = probe_video(first.output)
    assert abs(info.duration - len(decode_audio(media["speech"])) / 16000) <= 1 / info.fps + 0.03

    source = cv2.imread(str(photo))
    mouth, upper = face_regions(source)
    frames = list(read_frames(info))
    assert len(frames) == info.frame_count

    def change(frame: np.ndarray, region: tuple[slice, slice]) -> float:
        return float(np.mean(np.abs(frame[region].astype(np.int16) - source[region].astype(np.int16))))

    assert min(change(f, mouth) for f in frames) > 3, "the generated mouth was not pasted"
    assert max(change(f, upper) for f in frames) < 4, "the paste reached the upper face"

    engine = session.engine
    calls = engine.encoder_calls  # type: ignore[attr-defined]
    second = session.render(photo, session.audio(media["other"]), tmp_path / "out" / "again.mp4")
    assert second.cached_faces is True and second.cached_presenter is True
    assert engine.encoder_calls == calls  # type: ignore[attr-defined]  # no VAE encoding for a known presenter
    assert second.timings["detect"] == 0.0 and "prepare" not in second.timings
    session.unload()


def test_daemon_job_with_musetalk(musetalk_folder: Path, media: dict[str, Path], tmp_path: Path) -> None:
    d = Daemon(tmp_path / "d", batch_size=8)
    (d.root / "models").rmdir()
    models_with(musetalk_folder, d.root)
    d.config.write_text(d.config.read_text().replace('name = "mouthwarp"', 'name = "auto"'))
    try:
        d.start().wait_ready()
        d.submit("lesson-01", {"voice.wav": media["speech"], "anna.mp4": media["video"]})
        status = d.wait_finished("lesson-01", timeout=240)
        assert status["state"] == "done", status
        assert status["engine"] == "musetalk"
        assert status["engine_identity"].startswith("sha256:")
        video = status["videos"][0]
        assert video["timings"]["detect"] > 0 and video["timings"]["prepare"] > 0
        out = probe_video(d.outbox / "lesson-01" / "anna.mp4")
        assert abs(out.duration - len(decode_audio(media["speech"])) / 16000) <= 1 / out.fps + 0.03

        d.submit("lesson-02", {"voice.wav": media["other"], "anna.mp4": media["video"]})
        again = d.wait_finished("lesson-02", timeout=240)
        assert again["state"] == "done", again
        timings = again["videos"][0]["timings"]
        assert timings["detect"] == 0.0 and "prepare" not in timings, timings  # presenter reused: both skipped
        out = probe_video(d.outbox / "lesson-02" / "anna.mp4")
        assert abs(out.duration - len(decode_audio(media["other"])) / 16000) <= 1 / out.fps + 0.03
    finally:
        stop_daemon(d)
