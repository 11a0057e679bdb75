"""The render's stages run concurrently; a stage failing mid-video stops them all cleanly."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from heygemd.demo import presenter_video, speech_wav
from heygemd.errors import OutOfMemory
from heygemd.lipsync import LipSyncSession
from heygemd.settings import EngineSettings, PathsSettings, Settings
from tests.pipeline.media import ffmpeg_children


def heygemd_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("heygemd-") and t.name != "heygemd-watchdog"]


@pytest.fixture
def session(tmp_path: Path) -> LipSyncSession:
    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="mouthwarp", batch_size=4),
    )
    return LipSyncSession(settings)


def test_an_engine_failing_mid_video_stops_every_stage(session: LipSyncSession, tmp_path: Path) -> None:
    """Audio longer than the video: decoder, spool encoder/decoder and the output encoder are all running when
    the engine fails in the ping-pong's backward pass."""
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=0.8, size=(320, 180))
    speech = session.audio(
        speech_wav(tmp_path / "s.wav", sentences=("Hello there, how are you?",), pause_seconds=0.1, lead_seconds=0.1)
    )
    assert speech.frame_count(25.0) > 2 * 20 + 8  # well into the backward pass
    engine = session.engine
    real_generate = engine.generate
    calls: list[int] = []

    def failing(batch):
        calls.append(len(batch))
        if len(calls) == 8:  # frames 28-31 of the output: backward, from the spool
            raise OutOfMemory("out of GPU memory on cuda:0 for a single face", path=tmp_path / "weights")
        return real_generate(batch)

    engine.generate = failing  # type: ignore[method-assign]
    out = tmp_path / "out" / "anna.mp4"
    out.parent.mkdir()
    progress: list[int] = []
    with pytest.raises(OutOfMemory):
        session.render(
            presenter,
            speech,
            out,
            on_progress=lambda p: progress.append(p.frames_done) if p.stage == "render" else None,
        )
    assert len(calls) == 8  # the other stages stopped: no batch went to the engine after the failure
    assert progress and progress[-1] < speech.frame_count(25.0)
    assert ffmpeg_children() == []  # decoder, spool codec and encoder killed and reaped
    assert heygemd_threads() == []
    assert list(out.parent.iterdir()) == []  # no video, no poster, no partial file
    engine.generate = real_generate  # type: ignore[method-assign]
    done = session.render(presenter, speech, out)  # the session is still usable
    assert done.output.is_file() and done.frames == speech.frame_count(25.0)
    assert done.timings["infer"] > 0 and done.timings["faces"] > 0 and done.timings["blend"] > 0
    assert done.encoder in ("libx264", "h264_nvenc") and done.decoder in ("cpu", "nvdec")
