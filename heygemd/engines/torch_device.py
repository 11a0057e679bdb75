"""Turn the ``engine.device`` setting (auto, cpu, cuda, cuda:N, mps) into a usable torch.device."""

from __future__ import annotations

import torch

from heygemd.errors import ConfigError

_CUDA_HINT = 'Set engine.device = "auto" or "cpu"; "cuda" needs an NVIDIA GPU, its driver and a CUDA build of torch'


def resolve_device(spec: str | torch.device) -> torch.device:
    """The torch.device for ``spec``; ``auto`` is the first CUDA GPU when there is one, else the CPU.

    Raises ConfigError (with a hint) for a malformed name or a device this machine does not have.
    """
    if isinstance(spec, torch.device):
        text = str(spec)
    else:
        text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(
            f"engine.device: {spec!r} is not a device name", hint="Use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none (CPU-only build)"
            raise ConfigError(
                f"engine.device: {text!r} requested but CUDA is not available (torch CUDA: {build})", hint=_CUDA_HINT
            )
        index = 0 if device.index is None else device.index
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"engine.device: {text!r} requested but only {count} CUDA device(s) exist",
                hint=f"Use cuda:0 .. cuda:{count - 1}.",
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"engine.device: {text!r} requested but Apple MPS is not available", hint="Use auto or cpu."
            )
        return device
    raise ConfigError(f"engine.device: {text!r} is not supported", hint="Use auto, cpu, cuda or cuda:N.")


def describe_device(spec: str) -> str:
    """``spec`` resolved, with the GPU's name and memory, for ``heygemd check`` (ConfigError when unusable)."""
    device = resolve_device(spec)
    if device.type != "cuda":
        return f"{device} (torch {torch.__version__})"
    props = torch.cuda.get_device_properties(device)
    return (
        f"{device}: {props.name}, {props.total_memory / 2**30:.0f} GiB "
        f"(torch {torch.__version__}, CUDA {torch.version.cuda})"
    )


def compute_dtype(device: torch.device, fp16: bool, min_capability: int = 0) -> torch.dtype:
    """float16 when ``fp16`` is asked for and ``device`` is a CUDA GPU of compute capability ``min_capability`` or
    newer; float32 otherwise (the CPU and MPS run fp32, as the engines' references do)."""
    if fp16 and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= min_capability:
        return torch.float16
    return torch.float32
