"""Helpers every torch engine shares: reading checkpoint files safely, hashing weights, batches that halve on
out-of-memory, batch-norm folding, the CPU thread count. One of each, used by the Wav2Lip and MuseTalk engines
alike."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import structlog
import torch
from torch import nn

from heygemd.engines.model_files import listing
from heygemd.errors import CheckpointError, OutOfMemory


def check_container(path: Path, hint: str | None = None) -> bool:
    """Refuse files that are not a PyTorch save before unpickling anything; True for the zip format."""
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path=path, hint=hint)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"unreadable zip archive ({exc})", path=path, hint=hint) from None
        if any(name.endswith("/constants.pkl") for name in names):
            raise CheckpointError(
                "this is a TorchScript archive, not a checkpoint dict",
                path=path,
                hint=hint or "Use the original wav2lip.pth / wav2lip_gan.pth, which hold {'state_dict': ...}.",
            )
        if not any(name.endswith("data.pkl") for name in names):
            raise CheckpointError("zip file without PyTorch data (not a checkpoint)", path=path, hint=hint)
        return True
    with path.open("rb") as handle:
        head = handle.read(2)
    if len(head) < 2 or head[0] != 0x80:  # legacy torch.save files are pickles (protocol >= 2)
        raise CheckpointError(
            "not a PyTorch checkpoint (the file is truncated, or another kind of file)", path=path, hint=hint
        )
    return False


def read_state_dict(path: Path, hint: str | None = None, *, mmap: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, keys without a ``module.`` prefix, on the CPU.

    Accepts ``{"state_dict": {...}, ...}`` (the Wav2Lip layout) and a bare state dict (MuseTalk's ``unet.pth``).
    Raises CheckpointError naming the file (with ``hint`` when given) for anything else.

    ``mmap``: map a zip-format file instead of reading it (for a caller that copies the tensors into its model;
    the mapping is gone once the returned tensors are). False: every tensor in memory of its own, for a caller
    that keeps them (``load_state_dict(assign=True)``).
    """
    path = Path(path)
    is_zip = check_container(path, hint)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip and mmap)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot read the checkpoint, it may be truncated or corrupted ({detail})", path=path, hint=hint
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a dict with a 'state_dict'", path=path, hint=hint)
    if "state_dict" in obj:
        state = obj["state_dict"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = listing([str(k) for k in obj.keys()]) or "none"
        raise CheckpointError(f"no 'state_dict' entry (top-level keys: {keys})", path=path, hint=hint)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"'state_dict' is a {type(state).__name__}, not a dict", path=path, hint=hint)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state_dict entry {key!r} is not a named tensor", path=path, hint=hint)
        tensors[key.removeprefix("module.")] = value
    return tensors


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    path: Path,
    *,
    what: str,
    hint: str | None = None,
) -> None:
    """Refuse ``state`` unless it has exactly the keys of ``expected``, each of its shape, floating point and finite:
    CheckpointError naming ``path`` (the file the tensors come from) and the first few keys at fault; ``what``
    says what the file should hold (``"LatentSync's UNet for this config"``)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} key(s): {listing(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected key(s): {listing(unexpected)}"] if unexpected else []
        )
        raise CheckpointError("; ".join(parts) + f" (not {what}?)", path=path, hint=hint)
    wrong = [
        f"{k}: expected {expected[k]}, found {tuple(v.shape)}"
        for k, v in state.items()
        if tuple(v.shape) != expected[k]
    ]
    if wrong:
        raise CheckpointError(
            f"wrong shape for {len(wrong)} tensor(s): {listing(wrong)} (not {what}?)", path=path, hint=hint
        )
    integral = [k for k, v in state.items() if not v.is_floating_point()]
    if integral:
        raise CheckpointError(f"integer tensors where weights belong: {listing(integral)}", path=path, hint=hint)
    broken = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"non-finite values (NaN/Inf) in {listing(broken)}", path=path, hint=hint)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    return files_sha256([path], chunk_size)


def files_sha256(paths: Iterable[Path], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of the contents of ``paths``, in order (one file: the same as ``sha256sum``)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            while block := handle.read(chunk_size):
                digest.update(block)
    return digest.hexdigest()


class HalvingBatches:
    """Runs inference over sub-batches of ``size``; on CUDA out-of-memory the size is halved (down to 1) and
    stays halved for the rest of the owner's life. ``OutOfMemory`` when even one item does not fit."""

    def __init__(self, size: int, *, device: torch.device, what: str, path: Path):
        self.size = size
        self.device = device
        self.what = what
        """What one item is, for the error message (e.g. "a single 96x96 face")."""
        self.path = path
        """The weights file the error names."""

    def run(self, count: int, infer: Callable[[int, int], None]) -> None:
        """Call ``infer(start, stop)`` over consecutive slices covering ``0..count``."""
        start = 0
        while start < count:
            size = min(self.size, count - start)
            out_of_memory = False
            try:
                infer(start, start + size)
            except torch.cuda.OutOfMemoryError as exc:
                if size == 1:
                    raise OutOfMemory(f"out of GPU memory on {self.device} for {self.what}", path=self.path) from exc
                out_of_memory = True
            if out_of_memory:
                # Outside the handler: the failed attempt's tensors, held by the traceback, are released by now.
                torch.cuda.empty_cache()
                self.size = max(1, size // 2)
                structlog.get_logger(__name__).warning(
                    "engine.out_of_memory", device=str(self.device), failed_batch=size, batch_size=self.size
                )
                continue
            start += size


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a (transposed) convolution in an ``nn.Sequential`` into that
    convolution's weights and bias, in place (eval-mode BatchNorm is an affine map per channel). The folded
    BatchNorm is replaced by ``nn.Identity`` so module indices and names stay. Returns ``model``."""
    with torch.no_grad():
        for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            for i in range(len(sequence) - 1):
                conv, norm = sequence[i], sequence[i + 1]
                if not isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) or not isinstance(norm, nn.BatchNorm2d):
                    continue
                if norm.running_mean is None or norm.running_var is None:
                    continue  # batch statistics only: nothing fixed to fold
                scale = norm.running_var.add(norm.eps).rsqrt()
                if norm.weight is not None:
                    scale = scale * norm.weight
                shift = -norm.running_mean * scale
                if norm.bias is not None:
                    shift = shift + norm.bias
                # Conv2d weights are (out, in, k, k); ConvTranspose2d weights (in, out, k, k).
                channel_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
                shape = [1] * conv.weight.dim()
                shape[channel_dim] = -1
                conv.weight.mul_(scale.view(shape))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.bias = nn.Parameter(bias * scale + shift)
                sequence[i + 1] = nn.Identity()
    return model


def cpu_threads(requested: int) -> int:
    """Intra-op threads for CPU inference: ``requested``, or for 0 the usable cores less a quarter, rounded down, so
    the decoding and encoding ffmpeg processes keep room (2 cores: 2, 4: 3, 16: 12). On the CPU the engine sets the
    pace and the other stages need a fraction of a core: on 2 cores, 2 threads rendered 720p in 0.8x the time of 1
    (bench/README.md, "Colour conversions")."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - cores // 4)
