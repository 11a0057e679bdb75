"""``LatentSyncEngine``: the pipeline's windows are the ones denoised together, the presenter's cached latents
stand in for the VAE encoding, and the sampling parameters (a job.toml may change them) reach every window.

The tiny random model of ``bench.latentsync_weights.TINY`` (64x64 faces, 16-frame windows), 2 steps; the model
core itself is pinned against the reference in ``test_latentsync.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heygemd.engines import latentsync
from heygemd.engines.latentsync import LatentSyncEngine, Sampling, initial_noise
from heygemd.pipeline.engine_contract import FaceBatch, PresenterEngine, PromptEngine

SAMPLING = Sampling(steps=2, guidance=1.5, seed=1247, deepcache=False)


@pytest.fixture(scope="module")
def engine(latentsync_folder: Path) -> LatentSyncEngine:
    return LatentSyncEngine(latentsync_folder, device="cpu", sampling=SAMPLING)


def batch(count: int, windows: tuple[int, ...] | None, seed: int = 0, **fields: object) -> FaceBatch:
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(count)]
    return FaceBatch(
        crops=crops,
        landmarks=[np.zeros((68, 2), np.float32)] * count,
        mels=np.zeros((count, 80, 16), np.float32),
        prompts=rng.normal(0, 1, (count, 50, 384)).astype(np.float32),
        windows=windows,
        **fields,  # type: ignore[arg-type]
    )


def test_it_is_the_pipelines_engine_with_16_frame_windows(engine: LatentSyncEngine) -> None:
    assert isinstance(engine, PromptEngine) and isinstance(engine, PresenterEngine)
    assert engine.needs.window == 16 and engine.needs.crop == "latentsync_affine" and engine.needs.presenter_prep
    assert engine.batch_size == 16  # one window per pass on the CPU
    assert engine.prep_shape() == (8, 8, 8)


def test_each_window_is_denoised_on_its_own(engine: LatentSyncEngine) -> None:
    """A window cut short by a frame without a face is not joined to the next: the temporal layers see exactly
    the pipeline's windows, as if each were rendered alone."""
    windows = (3, 16, 2)
    faces = batch(sum(windows), windows)
    out = engine.generate(faces)
    crops = np.stack(faces.crops)
    latents = engine.model.encode_faces(crops)
    noise = initial_noise(SAMPLING.seed, 64)
    start = 0
    for size in windows:
        alone = engine.model.generate_from_latents(
            crops[start : start + size],
            latents[start : start + size],
            faces.prompts[start : start + size],  # type: ignore[index]
            noise,
            SAMPLING.steps,
            SAMPLING.guidance,
        )
        np.testing.assert_array_equal(np.stack(out[start : start + size]), alone)
        start += size
    joined = engine.generate(batch(sum(windows), None))  # no windows given: runs of 16 (16, 5)
    assert not np.array_equal(np.stack(joined[:3]), np.stack(out[:3]))  # the first 3 frames in a window of 16


def test_the_presenters_latents_replace_the_vae_encoding(engine: LatentSyncEngine) -> None:
    faces = batch(7, (7,), seed=1)
    latents = engine.prepare_presenter(faces.crops)
    calls = engine.encoder_calls
    prepared = engine.generate(batch(7, (7,), seed=1, prepared=latents))
    assert engine.encoder_calls == calls  # nothing encoded
    np.testing.assert_array_equal(np.stack(prepared), np.stack(engine.generate(faces)))
    assert engine.encoder_calls == calls + 7  # without them each crop is encoded


def test_fp16_keeps_its_own_presenter_cache(
    latentsync_folder: Path, engine: LatentSyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine as CUDA loads it in fp16 (here on the CPU's float16 kernels): its presenter latents are cached
    apart from fp32's (another prep_version), stored as float32, and stand in for the encoding as in fp32."""
    monkeypatch.setattr(latentsync, "compute_dtype", lambda device, fp16, min_capability=0: torch.float16)
    half = LatentSyncEngine(latentsync_folder, device="cpu", sampling=SAMPLING)
    try:
        assert half.model.dtype == torch.float16 and half.prep_version != engine.prep_version
        faces = batch(7, (7,), seed=3)
        latents = half.prepare_presenter(faces.crops)
        assert latents.dtype == np.float32 and latents.shape == (7, *half.prep_shape())
        prepared = half.generate(batch(7, (7,), seed=3, prepared=latents))
        np.testing.assert_array_equal(np.stack(prepared), np.stack(half.generate(faces)))
    finally:
        half.close()


def test_the_sampling_of_a_job_reaches_the_windows(engine: LatentSyncEngine) -> None:
    faces = batch(4, (4,), seed=2)
    first = np.stack(engine.generate(faces))
    try:
        engine.sampling = Sampling(steps=1, guidance=1.0, seed=7, deepcache=False)
        other = np.stack(engine.generate(faces))
    finally:
        engine.sampling = SAMPLING
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.stack(engine.generate(faces)), first)  # back: the same pictures again


def test_aligned_crops_of_another_size_come_back_at_their_size(engine: LatentSyncEngine) -> None:
    crops = [np.full((512, 512, 3), 100, np.uint8)] * 2
    faces = FaceBatch(
        crops=crops,
        landmarks=[np.zeros((68, 2), np.float32)] * 2,
        mels=np.zeros((2, 80, 16), np.float32),
        prompts=np.zeros((2, 50, 384), np.float32),
        windows=(2,),
    )
    assert [face.shape for face in engine.generate(faces)] == [(512, 512, 3)] * 2
