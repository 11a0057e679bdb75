"""Engines that see frames in windows (``EngineNeeds.window``, LatentSync's 16) through the real pipeline: a
presenter whose face disappears for a few frames, ping-ponged to a longer audio, real ffmpeg and dlib.

A stand-in engine with 4-frame windows and the ``latentsync_affine`` crop rule inverts every aligned face it gets
and records the windows it is handed; the windows must be the rule's (runs of frames with a face, cut every 4 from
the start of each run, restarted after every frame without one), whole in every batch, and the frames without a
face must leave the pipeline as they came in.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from heygemd.demo import encode_frames, presenter_frames
from heygemd.pipeline import align
from heygemd.pipeline.audio import SAMPLE_RATE, load_audio_features
from heygemd.pipeline.engine_contract import EngineNeeds, FaceBatch
from heygemd.pipeline.face_detectors import DlibDetector
from heygemd.pipeline.faces import FaceTrack
from heygemd.pipeline.frames import frame_schedule, read_frames
from heygemd.pipeline.probe import probe_video
from heygemd.pipeline.run import BATCH_BYTES, RenderOptions, batch_frames, render_video
from heygemd.settings import FacesSettings, VideoSettings

pytest.importorskip("dlib")

FPS = 25.0
SOURCE_FRAMES = 40
BLANK = range(12, 18)
"""Source frames without a face (a flat grey picture)."""
WINDOW = 4


class WindowRecorder:
    """A windowed engine: inverts each aligned face, records ``(windows, crops)`` of every batch."""

    name = "recorder"
    identity = "recorder-1"
    needs = EngineNeeds(crop="latentsync_affine", window=WINDOW)
    batch_size = 2 * WINDOW

    def __init__(self) -> None:
        self.batches: list[tuple[tuple[int, ...], int]] = []

    def prepare(self, mel: np.ndarray) -> None:
        pass

    def generate(self, batch: FaceBatch) -> list[np.ndarray]:
        assert batch.windows is not None
        assert all(crop.shape == (align.CROP_SIZE, align.CROP_SIZE, 3) for crop in batch.crops)
        self.batches.append((batch.windows, len(batch)))
        return [255 - crop for crop in batch.crops]

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def expected_windows(usable: list[bool], window: int) -> list[int]:
    """Runs of consecutive usable output frames, each cut into pieces of ``window`` from its start."""
    windows: list[int] = []
    run = 0
    for face in [*usable, False]:
        if face:
            run += 1
            continue
        windows += [window] * (run // window) + ([run % window] if run % window else [])
        run = 0
    return windows


def test_windows_restart_after_a_faceless_run_and_faceless_frames_pass_through(tmp_path: Path) -> None:
    frames = list(presenter_frames(SOURCE_FRAMES / FPS, FPS, (320, 180)))
    for i in BLANK:
        frames[i] = np.full_like(frames[i], 128)
    source = encode_frames(frames, tmp_path / "gap.mp4", FPS, (320, 180))
    voice = tmp_path / "voice.wav"
    with wave.open(str(voice), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.random.default_rng(0).integers(-3000, 3000, int(2.2 * SAMPLE_RATE), dtype="<i2").tobytes())
    audio = load_audio_features(voice)  # 55 frames: ping-pong past the end of the video
    engine = WindowRecorder()
    result = render_video(
        source,
        audio,
        tmp_path / "out.mp4",
        engine,
        DlibDetector(),
        options=RenderOptions(
            video=VideoSettings(crf=0, preset="ultrafast", poster=False), faces=FacesSettings(max_gap_frames=0)
        ),
        cache_dir=tmp_path / "cache",
        work_dir=tmp_path / "work",
    )

    (track_file,) = (tmp_path / "cache" / "faces").glob("*.npz")
    track = FaceTrack.load(track_file)
    matrices = align.alignment_matrices(track.landmarks)
    has_crop = [track.has_face(i) and bool(np.isfinite(matrices[i]).all()) for i in range(SOURCE_FRAMES)]
    assert not any(has_crop[i] for i in BLANK) and sum(has_crop) >= SOURCE_FRAMES - len(BLANK) - 2
    schedule = list(frame_schedule(SOURCE_FRAMES, result.frames, "pingpong"))
    assert result.frames == audio.frame_count(FPS) == 55

    recorded = [size for windows, _ in engine.batches for size in windows]
    assert recorded == expected_windows([has_crop[s] for s in schedule], WINDOW)
    assert all(sum(windows) == crops for windows, crops in engine.batches)
    assert max(crops for _, crops in engine.batches) <= engine.batch_size + WINDOW - 1

    source_frames = list(read_frames(probe_video(source)))
    output = list(read_frames(probe_video(result.output)))
    assert len(output) == result.frames
    for out, s in zip(output, schedule, strict=True):
        change = np.abs(out.astype(np.int16) - source_frames[s].astype(np.int16))
        if not has_crop[s]:
            assert change.mean() < 1.0, f"source frame {s} has no face and must pass through unchanged"
        else:
            pasted = align.paste_mask(matrices[s], out.shape).soft > 0.99
            x0, y0, x1, y1 = align.paste_mask(matrices[s], out.shape).box
            assert change[y0:y1, x0:x1][pasted].mean() > 40, f"source frame {s}: the inverted face is not pasted"


def test_a_windowed_batch_is_whole_windows_at_least_one_even_past_the_byte_limit() -> None:
    engine = WindowRecorder()
    assert batch_frames(engine, batch_size=64, frame_bytes=1280 * 720 * 3) == 2 * WINDOW  # the engine's pass
    assert batch_frames(engine, batch_size=6, frame_bytes=1280 * 720 * 3) == WINDOW  # whole windows
    assert batch_frames(engine, batch_size=64, frame_bytes=BATCH_BYTES) == WINDOW  # one window over the limit
