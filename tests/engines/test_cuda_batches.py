"""The batch size from free GPU memory, and the copy streams (CUDA parts marked gpu)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from heygemd.engines.cuda_batches import FREE_MEMORY_SHARE, batch_size_for, fitting_batch_size
from heygemd.engines.wav2lip import Wav2LipEngine
from heygemd.pipeline.engine_contract import FaceBatch
from tests.engines.checkpoints import make_random_checkpoint

GIB = 1 << 30


def test_the_batch_fills_the_share_of_free_memory_and_no_more() -> None:
    per_item, fixed = 100 << 20, 300 << 20
    size = batch_size_for(8 * GIB, fixed, per_item, configured=1000)
    assert fixed + size * per_item <= 8 * GIB * FREE_MEMORY_SHARE < fixed + (size + 1) * per_item


def test_the_configured_size_is_a_ceiling_and_one_item_the_floor() -> None:
    assert batch_size_for(100 * GIB, 0, 1 << 20, configured=64) == 64
    assert batch_size_for(GIB, 2 * GIB, 1 << 20, configured=64) == 1  # not even one fits: OOM's error says so
    assert batch_size_for(GIB, 0, 0, configured=16) == 16  # nothing measurable per item
    with pytest.raises(ValueError):
        batch_size_for(GIB, 0, 1, configured=0)


def test_the_cpu_keeps_the_configured_size_without_probing() -> None:
    calls: list[int] = []
    assert fitting_batch_size(calls.append, torch.device("cpu"), 64) == 64
    assert calls == []


class FakeGauge:
    """Peaks of a batch whose cost is ``fixed + n * per_item``, read by the probe's own count (``run`` records it),
    and ``free`` bytes free."""

    def __init__(self, fixed: int, per_item: int, free: int):
        self.fixed, self.per_item, self.free_bytes = fixed, per_item, free
        self.counts: list[int] = []

    def peak(self, run: Callable[[], None]) -> int:
        run()
        return self.fixed + self.counts[-1] * self.per_item

    def free(self) -> int:
        return self.free_bytes


@pytest.mark.parametrize("probes", [(2, 4), (1, 2)])
def test_the_size_comes_from_the_probes_peaks(probes: tuple[int, int]) -> None:
    gauge = FakeGauge(fixed=3 * GIB, per_item=700 << 20, free=20 * GIB)
    size = fitting_batch_size(gauge.counts.append, torch.device("cuda"), 64, probes=probes, gauge=gauge)
    assert gauge.counts == list(probes)
    assert size == batch_size_for(20 * GIB, 3 * GIB, 700 << 20, 64) == 19  # (0.8 * 20 GiB - 3 GiB) // 700 MiB
    roomy = FakeGauge(fixed=3 * GIB, per_item=700 << 20, free=200 * GIB)
    assert fitting_batch_size(roomy.counts.append, torch.device("cuda"), 64, probes=probes, gauge=roomy) == 64


def test_a_configured_size_within_the_probes_is_kept_without_probing() -> None:
    gauge = FakeGauge(fixed=0, per_item=GIB, free=GIB)
    assert fitting_batch_size(gauge.counts.append, torch.device("cuda"), 4, gauge=gauge) == 4
    assert fitting_batch_size(gauge.counts.append, torch.device("cuda"), 2, probes=(1, 2), gauge=gauge) == 2
    assert gauge.counts == []


# ---------------------------------------------------------------- CUDA (pytest -m gpu on a GPU machine)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _batch(count: int, seed: int) -> FaceBatch:
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (100 + i % 7, 90 + i % 5, 3), dtype=np.uint8) for i in range(count)]
    mels = rng.uniform(-4, 1, (count, 80, 16)).astype(np.float32)
    return FaceBatch(crops=crops, landmarks=[], mels=mels)


@pytest.mark.gpu
@needs_cuda
def test_overlapped_sub_batches_give_the_cpus_pixels(tmp_path: Path) -> None:
    """Twelve sub-batches of 3 through the copy streams, fp32: any race between a sub-batch's upload, compute and
    download (a buffer read before it landed, or overwritten while in use) shows up as pixels far from the CPU's."""
    checkpoint = make_random_checkpoint(tmp_path / "w.pth")
    batch = _batch(36, seed=3)
    cpu = Wav2LipEngine(checkpoint, device="cpu", batch_size=3)
    gpu = Wav2LipEngine(checkpoint, device="cuda", batch_size=3, fp16=False)
    try:
        assert gpu.batch_size == 3
        for _ in range(2):  # the second call reuses the pinned buffers the first one filled
            for a, b in zip(gpu.generate(batch), cpu.generate(batch), strict=True):
                assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    finally:
        gpu.close()
        cpu.close()


@pytest.mark.gpu
@needs_cuda
def test_the_batch_size_at_load_fits_the_free_memory(tmp_path: Path) -> None:
    checkpoint = make_random_checkpoint(tmp_path / "w.pth")
    probe = Wav2LipEngine(checkpoint, device="cuda", batch_size=8, fp16=False)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    probe.generate(_batch(8, seed=4))
    peak_for_8 = torch.cuda.max_memory_allocated()
    probe.close()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 4.0 * peak_for_8 / total))  # room for ~30 faces
    try:
        engine = Wav2LipEngine(checkpoint, device="cuda", batch_size=512, fp16=False)
        try:
            assert 8 <= engine.batch_size < 512
            chosen = engine.batch_size
            engine.generate(_batch(2 * chosen, seed=5))
            assert engine.batch_size == chosen  # it fitted: no out-of-memory halving was needed
        finally:
            engine.close()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
