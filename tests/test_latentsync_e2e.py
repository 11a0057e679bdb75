"""LatentSync end to end with a tiny random model folder in the official layout and file formats
(``models/latentsync/``, ``bench.latentsync_weights.TINY``: 64x64 faces, 16-frame windows), 2 denoising steps.

Random weights draw noise, not a mouth, so this checks the plumbing the real weights go through: the engine is
chosen by name (settings or job.toml), its Whisper windows are computed once per job, the aligned faces are
generated window by window and pasted back, frames without a face pass through, the output is as long as the
audio (ping-pong past the end of the video), status.json names the engine, its weights and its sampling, and a
presenter reused with a new audio skips face detection and VAE encoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heygemd.demo import encode_frames, presenter_frames, speech_wav
from heygemd.lipsync import LipSyncSession
from heygemd.pipeline.audio import decode_audio
from heygemd.pipeline.faces import FaceTrack
from heygemd.pipeline.frames import frame_schedule, read_frames
from heygemd.pipeline.probe import probe_video
from heygemd.settings import Settings
from tests.daemon.daemon_process import Daemon, stop_daemon

FPS = 25.0
SOURCE_FRAMES = 30
BLANK = range(14, 20)
"""Source frames without a face (a flat grey picture): the windows restart after them."""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latentsync-media")
    frames = list(presenter_frames(SOURCE_FRAMES / FPS, FPS, (320, 180)))
    for i in BLANK:
        frames[i] = np.full_like(frames[i], 128)
    return {
        "speech": speech_wav(root / "speech.wav", sentences=("Hello there.",), pause_seconds=0.1, lead_seconds=0.1),
        "other": speech_wav(root / "other.wav", sentences=("New.",), pause_seconds=0.1, lead_seconds=0.1),
        "video": encode_frames(frames, root / "anna.mp4", FPS, (320, 180)),
    }


def models_with(latentsync_folder: Path, root: Path) -> Path:
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "latentsync").symlink_to(latentsync_folder, target_is_directory=True)
    return models


def audio_seconds(path: Path) -> float:
    return len(decode_audio(path)) / 16000


def test_session_renders_windows_passes_faceless_frames_and_reuses_the_presenter(
    latentsync_folder: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "paths": {
                "inbox": tmp_path / "inbox",
                "outbox": tmp_path / "outbox",
                "models": models_with(latentsync_folder, tmp_path),
            },
            "engine": {"name": "latentsync", "device": "cpu", "latentsync_steps": 2},
            "faces": {"max_gap_frames": 0},
            "video": {"preset": "ultrafast", "crf": 0, "poster": False},
        }
    )
    session = LipSyncSession(settings)
    assert session.engine_name == "latentsync"
    assert session.configure() == {"steps": 2, "guidance": 1.5, "seed": 1247, "deepcache": False}
    audio = session.audio(media["speech"])
    assert audio.prompts is not None
    result = session.render(media["video"], audio, tmp_path / "out" / "anna.mp4")
    assert result.cached_presenter is False and result.cached_faces is False
    assert result.timings["prepare"] > 0 and result.timings["detect"] > 0
    info = probe_video(result.output)
    assert abs(info.duration - audio_seconds(media["speech"])) <= 1 / info.fps + 0.03
    assert result.frames > SOURCE_FRAMES  # the video ping-pongs to the audio's length

    (track_file,) = (settings.paths.cache_dir / "faces").glob("*.npz")
    has_face = FaceTrack.load(track_file).face_mask
    assert not has_face[list(BLANK)].any() and has_face.sum() >= SOURCE_FRAMES - len(BLANK) - 2
    source = list(read_frames(probe_video(media["video"])))
    output = list(read_frames(info))
    assert len(output) == result.frames
    for out, s in zip(output, frame_schedule(SOURCE_FRAMES, result.frames, "pingpong"), strict=True):
        change = float(np.abs(out.astype(np.int16) - source[s].astype(np.int16)).mean())
        if has_face[s]:
            assert change > 3, f"source frame {s}: the generated face was not pasted"
        else:
            assert change < 1.0, f"source frame {s} has no face and must pass through unchanged"

    engine = session.engine
    encoded = engine.encoder_calls  # type: ignore[attr-defined]
    assert encoded == has_face.sum()  # every source face once, not every output frame
    again = session.render(media["video"], session.audio(media["other"]), tmp_path / "out" / "again.mp4")
    assert again.cached_faces is True and again.cached_presenter is True
    assert engine.encoder_calls == encoded  # type: ignore[attr-defined]  # no VAE encoding for a known presenter
    assert again.timings["detect"] == 0.0 and "prepare" not in again.timings
    assert abs(probe_video(again.output).duration - audio_seconds(media["other"])) <= 1 / FPS + 0.03
    session.unload()


def test_daemon_job_choosing_latentsync_in_job_toml(
    latentsync_folder: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    d = Daemon(tmp_path / "d", batch_size=16)
    (d.root / "models").rmdir()
    models_with(latentsync_folder, d.root)
    options = b'engine = "latentsync"\nlatentsync_steps = 2\nlatentsync_guidance = 2.0\n'
    try:
        d.start().wait_ready()
        d.submit("lesson-01", {"voice.wav": media["speech"], "anna.mp4": media["video"], "job.toml": options})
        status = d.wait_finished("lesson-01", timeout=300)
        assert status["state"] == "done", status
        assert status["engine"] == "latentsync" and status["engine_identity"].startswith("sha256:")
        assert status["engine_parameters"] == {"steps": 2, "guidance": 2.0, "seed": 1247, "deepcache": False}
        timings = status["videos"][0]["timings"]
        assert timings["detect"] > 0 and timings["prepare"] > 0
        out = probe_video(d.outbox / "lesson-01" / "anna.mp4")
        assert abs(out.duration - audio_seconds(media["speech"])) <= 1 / out.fps + 0.03

        d.submit("lesson-02", {"voice.wav": media["other"], "anna.mp4": media["video"], "job.toml": options})
        again = d.wait_finished("lesson-02", timeout=300)
        assert again["state"] == "done", again
        timings = again["videos"][0]["timings"]
        assert timings["detect"] == 0.0 and "prepare" not in timings, timings  # presenter reused: both skipped
        out = probe_video(d.outbox / "lesson-02" / "anna.mp4")
        assert abs(out.duration - audio_seconds(media["other"])) <= 1 / out.fps + 0.03
    finally:
        stop_daemon(d)
