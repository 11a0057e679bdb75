"""Per NVIDIA GPU of this machine: utilisation, memory used and total, temperature, encoder and decoder use, read
with NVML (``nvidia-ml-py``) at each scrape.

Where NVML cannot start (no NVIDIA driver, its ``libnvidia-ml.so.1`` missing) none of these series is exported,
and ``heygemd check`` says why (:func:`describe_gpus`). A reading a GPU does not support (e.g. the encoder's use on
a GPU without NVENC) is left out for that GPU alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pynvml
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

T = TypeVar("T")

LABELS = ["gpu", "name", "uuid"]
"""Every GPU series is labelled with the GPU's index (as nvidia-smi and CUDA_VISIBLE_DEVICES number them), its
model name and its UUID."""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class GpuCollector(Collector):
    """The GPU series of this machine. ``nvml``: the NVML binding (``pynvml``), started at the first scrape; a start
    that fails is not tried again (``reason`` says why)."""

    def __init__(self, nvml: Any = pynvml) -> None:
        self.nvml = nvml
        self.reason = ""
        self._started: bool | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether NVML runs here (started now, the first time)."""
        with self._lock:
            if self._started is None:
                try:
                    self.nvml.nvmlInit()
                    self._started = True
                except self.nvml.NVMLError as exc:
                    self._started = False
                    self.reason = f"NVML cannot start: {exc}"
            return self._started

    def read(self, call: Callable[..., T], *args: Any) -> T | None:
        """``call(*args)``, None when NVML answers with an error."""
        try:
            return call(*args)
        except self.nvml.NVMLError:  # not supported by this GPU, or the GPU is lost: that series is left out
            return None

    def gpus(self) -> list[tuple[int, Any, str, str]]:
        """(index, handle, name, uuid) of every GPU NVML sees; none when NVML does not run."""
        if not self.available():
            return []
        nvml = self.nvml
        count = self.read(nvml.nvmlDeviceGetCount) or 0
        found = []
        for index in range(count):
            handle = self.read(nvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            name = _text(self.read(nvml.nvmlDeviceGetName, handle) or "")
            uuid = _text(self.read(nvml.nvmlDeviceGetUUID, handle) or "")
            found.append((index, handle, name, uuid))
        return found

    def collect(self) -> Iterator[Metric]:
        gpus = self.gpus()
        if not gpus:
            return
        nvml = self.nvml
        families = {
            "utilization": GaugeMetricFamily(
                "heygemd_gpu_utilization_ratio",
                "Share of the last sample period the GPU was busy (0-1).",
                labels=LABELS,
            ),
            "used": GaugeMetricFamily("heygemd_gpu_memory_used_bytes", "GPU memory in use.", labels=LABELS),
            "total": GaugeMetricFamily("heygemd_gpu_memory_total_bytes", "GPU memory in all.", labels=LABELS),
            "temperature": GaugeMetricFamily(
                "heygemd_gpu_temperature_celsius", "Temperature of the GPU die.", labels=LABELS
            ),
            "encoder": GaugeMetricFamily(
                "heygemd_gpu_encoder_utilization_ratio", "Use of the video encoder (NVENC), 0-1.", labels=LABELS
            ),
            "decoder": GaugeMetricFamily(
                "heygemd_gpu_decoder_utilization_ratio", "Use of the video decoder (NVDEC), 0-1.", labels=LABELS
            ),
        }
        for index, handle, name, uuid in gpus:
            labels = [str(index), name, uuid]
            rates = self.read(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self.read(nvml.nvmlDeviceGetMemoryInfo, handle)
            readings = {
                "utilization": rates.gpu / 100 if rates is not None else None,
                "used": memory.used if memory is not None else None,
                "total": memory.total if memory is not None else None,
                "temperature": self.read(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
                "encoder": _share(self.read(nvml.nvmlDeviceGetEncoderUtilization, handle)),
                "decoder": _share(self.read(nvml.nvmlDeviceGetDecoderUtilization, handle)),
            }
            for key, value in readings.items():
                if value is not None:
                    families[key].add_metric(labels, value)
        yield from families.values()


def _share(reading: list[int] | tuple[int, int] | None) -> float | None:
    """NVML's ``[utilisation %, sampling period µs]`` of the encoder or decoder as a ratio."""
    return reading[0] / 100 if reading is not None else None


def describe_gpus(collector: GpuCollector | None = None) -> tuple[bool, str]:
    """For ``heygemd check``: whether GPU series are exported, and which GPUs (or why not)."""
    collector = collector or GpuCollector()
    gpus = collector.gpus()
    if not gpus:
        return False, collector.reason or "NVML sees no GPU"
    driver = collector.read(collector.nvml.nvmlSystemGetDriverVersion)
    names = ", ".join(f"{index}: {name}" for index, _, name, _ in gpus)
    return True, f"{len(gpus)} NVIDIA GPU{'s' if len(gpus) > 1 else ''} ({names}), driver {_text(driver or '?')}"
