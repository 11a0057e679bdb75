"""The GPU series: absent where NVML cannot start (this machine has no NVIDIA driver; `heygemd check` says why),
present per GPU on a GPU machine (`pytest -m gpu`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from prometheus_client import CollectorRegistry

from heygemd.check import _gpu_metrics
from heygemd.metrics.gpu import GpuCollector, describe_gpus

SERIES = (
    "heygemd_gpu_utilization_ratio",
    "heygemd_gpu_memory_used_bytes",
    "heygemd_gpu_memory_total_bytes",
    "heygemd_gpu_temperature_celsius",
    "heygemd_gpu_encoder_utilization_ratio",
    "heygemd_gpu_decoder_utilization_ratio",
)


def nvml_runs() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    return True


def samples(collector: GpuCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


@pytest.mark.skipif(nvml_runs(), reason="NVML runs here: the machine has an NVIDIA driver")
def test_without_a_driver_no_gpu_series_and_check_says_why() -> None:
    collector = GpuCollector()
    assert samples(collector) == {}
    exported, reason = describe_gpus(collector)
    assert not exported and reason.startswith("NVML cannot start: ") and "Not Found" in reason
    row = _gpu_metrics()
    assert row.name == "GPU metrics" and not row.ok and not row.required
    assert row.detail.startswith("not exported: NVML cannot start") and "install the driver" in row.fix


class StandIn:
    """NVML's answers for two GPUs, the second without an encoder reading (this machine has no GPU to ask; the
    `gpu` test below reads real ones)."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return b"NVIDIA L4" if handle else "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=87 if handle == 0 else 0, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 61

    def nvmlDeviceGetEncoderUtilization(self, handle: int) -> list[int]:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [25, 167000]

    def nvmlDeviceGetDecoderUtilization(self, handle: int) -> list[int]:
        return [5, 167000]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.86.15"


def test_readings_become_base_units_and_an_unsupported_one_is_left_out() -> None:
    collector = GpuCollector(StandIn())
    found = samples(collector)
    h100 = {"gpu": "0", "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0"}
    l4 = {"gpu": "1", "name": "NVIDIA L4", "uuid": "GPU-1"}
    assert found["heygemd_gpu_utilization_ratio"] == [(h100, 0.87), (l4, 0.0)]
    assert found["heygemd_gpu_memory_used_bytes"] == [(h100, 3 * 2**30), (l4, 3 * 2**30)]
    assert found["heygemd_gpu_memory_total_bytes"][0] == (h100, 80 * 2**30)
    assert found["heygemd_gpu_temperature_celsius"][1] == (l4, 61)
    assert found["heygemd_gpu_encoder_utilization_ratio"] == [(h100, 0.25)]
    assert found["heygemd_gpu_decoder_utilization_ratio"] == [(h100, 0.05), (l4, 0.05)]
    assert describe_gpus(collector) == (
        True,
        "2 NVIDIA GPUs (0: NVIDIA H100 80GB HBM3, 1: NVIDIA L4), driver 570.86.15",
    )


@pytest.mark.gpu
def test_every_gpu_of_this_machine_is_exported() -> None:
    found = samples(GpuCollector())
    count = pynvml.nvmlDeviceGetCount()
    assert count >= 1
    for name in ("heygemd_gpu_utilization_ratio", "heygemd_gpu_memory_total_bytes", "heygemd_gpu_temperature_celsius"):
        assert len(found[name]) == count, name
    for labels, total in found["heygemd_gpu_memory_total_bytes"]:
        assert total > 2**30 and labels["uuid"].startswith("GPU-") and labels["name"]
    assert all(0 <= value <= 1 for _, value in found["heygemd_gpu_utilization_ratio"])
    assert set(found) <= set(SERIES)
