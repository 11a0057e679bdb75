"""CUDA batching shared by the torch engines: the starting batch size from the GPU's free memory, and copy
streams that overlap uploads, compute and downloads across the sub-batches of one call.

* :func:`fitting_batch_size` measures what one more item costs (two probe batches, peak memory of each, read
  by a :class:`PeakGauge`) and returns the largest batch, up to the configured one, that fits in a share of the
  memory free now. The out-of-memory halving of ``torch_util.HalvingBatches`` stays behind it (another process
  may take memory later).
* :class:`CopyStreams`: the host-to-device copy of sub-batch i+1 runs on an upload stream while sub-batch i
  computes on the current stream, and the device-to-host copy of sub-batch i on a download stream. The host only
  enqueues; :meth:`CopyStreams.wait` is the one synchronisation, before the host reads its output buffers. Host
  buffers must be pinned for the copies to be asynchronous.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import torch

FREE_MEMORY_SHARE = 0.8
"""Share of the GPU memory free at measurement that the batch may use (the rest: the allocator's fragmentation,
the encoder/decoder contexts of NVENC/NVDEC)."""


def batch_size_for(free_bytes: int, fixed_bytes: float, per_item_bytes: float, configured: int) -> int:
    """The largest batch of at most ``configured`` items whose ``fixed_bytes + n * per_item_bytes`` fits in
    ``FREE_MEMORY_SHARE`` of ``free_bytes``; at least 1 (a single item that does not fit is the OOM error's
    case)."""
    if configured < 1:
        raise ValueError(f"configured batch size must be at least 1, got {configured}")
    room = free_bytes * FREE_MEMORY_SHARE - max(fixed_bytes, 0.0)
    if per_item_bytes <= 0:
        return configured
    return max(1, min(configured, int(room // per_item_bytes)))


class PeakGauge(Protocol):
    """Measures what a probe takes on a device: the peak of the memory it allocated, and the memory free now."""

    def peak(self, run: Callable[[], None]) -> int:
        """Bytes allocated at the peak of ``run()`` beyond what was allocated before it."""
        ...

    def free(self) -> int:
        """Bytes the process can still take, with the probes' cached blocks returned."""
        ...


class CudaGauge:
    """``PeakGauge`` of a CUDA device, from the caching allocator's statistics."""

    def __init__(self, device: torch.device):
        self.device = device

    def peak(self, run: Callable[[], None]) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        run()
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before

    def free(self) -> int:
        torch.cuda.empty_cache()
        return free_memory(self.device)


def fitting_batch_size(
    run: Callable[[int], None],
    device: torch.device,
    configured: int,
    probes: tuple[int, int] = (2, 4),
    gauge: PeakGauge | None = None,
) -> int:
    """The batch size to start with on ``device``: ``run(n)`` processes a batch of ``n`` dummy items; it is
    called with the two ``probes`` counts and the peak memory of each gives the fixed and the per-item cost.
    Off CUDA, or when ``configured`` is no more than the larger probe, ``configured`` unchanged, without probing.
    ``gauge`` reads the memory (default: ``CudaGauge(device)``)."""
    small, large = probes
    if device.type != "cuda" or configured <= large:
        return configured
    if gauge is None:
        gauge = CudaGauge(device)
    peaks = [gauge.peak(functools.partial(run, count)) for count in (small, large)]
    per_item = (peaks[1] - peaks[0]) / (large - small)
    fixed = peaks[0] - small * per_item
    return batch_size_for(gauge.free(), fixed, per_item, configured)


def free_memory(device: torch.device) -> int:
    """Bytes this process can still take on ``device``: the driver's free memory, within the process's cap
    (``torch.cuda.set_per_process_memory_fraction``) less what its allocator already reserved."""
    free, total = torch.cuda.mem_get_info(device)
    capped = int(total * torch.cuda.get_per_process_memory_fraction(device)) - torch.cuda.memory_reserved(device)
    return max(0, min(free, capped))


class CopyStreams:
    """An upload and a download stream on one CUDA device (see the module's docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.upload = torch.cuda.Stream(device)
        self.download = torch.cuda.Stream(device)

    def to_device(self, *host: torch.Tensor) -> list[torch.Tensor]:
        """``host`` tensors copied to the device on the upload stream; the current stream waits for them."""
        # The upload does not wait for the compute enqueued so far (that would serialise them): the device memory
        # it copies into is new, and record_stream keeps the allocator from reusing it before the compute is done.
        # The host buffers are not refilled until ``wait``.
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.upload):
            tensors = [t.to(self.device, non_blocking=True) for t in host]
        compute.wait_stream(self.upload)
        for tensor in tensors:
            tensor.record_stream(compute)  # the allocator must not hand it out before compute is done with it
        return tensors

    def to_host(self, device_tensor: torch.Tensor, out: torch.Tensor) -> None:
        """Copy ``device_tensor`` into the pinned ``out`` on the download stream, after the compute so far."""
        self.download.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.download):
            out.copy_(device_tensor, non_blocking=True)
        device_tensor.record_stream(self.download)

    def wait(self) -> None:
        """Block until every download enqueued so far has landed in host memory."""
        self.download.synchronize()
