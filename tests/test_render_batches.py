"""Render batches are bounded by bytes and by the engine's own pass: frames beyond one engine pass would only wait
in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from heygemd.demo import presenter_video, speech_wav
from heygemd.engines import mouthwarp
from heygemd.engines.mouthwarp import MouthWarpEngine
from heygemd.engines.wav2lip import CPU_SUB_BATCH, Wav2LipEngine
from heygemd.lipsync import LipSyncSession
from heygemd.pipeline.engine_contract import EngineNeeds
from heygemd.pipeline.run import BATCH_BYTES, batch_frames
from heygemd.settings import EngineSettings, PathsSettings, Settings
from tests.engines.checkpoints import make_random_checkpoint

FRAME_720P = 1280 * 720 * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("models") / "wav2lip.pth", seed=1)


class _WholeBatches:
    """An engine whose one pass takes any batch whole."""

    batch_size = 1 << 20
    needs = EngineNeeds()


def test_an_engine_with_large_passes_is_bounded_by_the_setting_and_by_bytes() -> None:
    engine = _WholeBatches()
    assert batch_frames(engine, 64, FRAME_720P) == BATCH_BYTES // FRAME_720P
    assert batch_frames(engine, 5, FRAME_720P) == 5
    assert batch_frames(engine, 64, 3840 * 2160 * 3 * 2) == 1  # one frame over the byte bound still renders


def test_mouthwarp_batches_a_few_frames_so_the_queues_fill_early() -> None:
    engine = MouthWarpEngine()
    assert batch_frames(engine, 64, FRAME_720P) == mouthwarp.BATCH_FRAMES < BATCH_BYTES // FRAME_720P
    assert batch_frames(engine, 2, FRAME_720P) == 2


def test_wav2lip_on_the_cpu_batches_one_pass_of_faces(checkpoint: Path) -> None:
    engine = Wav2LipEngine(checkpoint, device="cpu", batch_size=64)
    assert engine.batch_size == CPU_SUB_BATCH
    assert batch_frames(engine, 64, 320 * 180 * 3) == CPU_SUB_BATCH
    assert batch_frames(engine, 2, 320 * 180 * 3) == 2


def test_a_wav2lip_render_never_holds_more_frames_than_one_pass(checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        engine=EngineSettings(name="wav2lip", checkpoint=checkpoint, device="cpu", batch_size=64),
    )
    session = LipSyncSession(settings)
    presenter = presenter_video(tmp_path / "anna.mp4", seconds=0.6, size=(320, 180))
    speech = session.audio(
        speech_wav(tmp_path / "s.wav", sentences=("Hello there.",), pause_seconds=0.1, lead_seconds=0.1)
    )
    engine = session.engine
    real_generate = engine.generate
    sizes: list[int] = []

    def counting(batch):
        sizes.append(len(batch))
        return real_generate(batch)

    engine.generate = counting  # type: ignore[method-assign]
    out = tmp_path / "out" / "anna.mp4"
    out.parent.mkdir()
    done = session.render(presenter, speech, out)
    assert done.output.is_file() and done.frames == speech.frame_count(25.0)
    assert max(sizes) == CPU_SUB_BATCH
    assert sum(sizes) <= done.frames and sum(sizes) >= done.frames * done.face_ratio * 0.9
