"""Test helper: random Wav2Lip checkpoints in the official file layout, built from the published manifest.

The manifest (``wav2lip_state_dict_manifest.json`` next to this file, a copy of the shared one) lists every
parameter and buffer of the generator with its shape, in state_dict order. The weights are random but scaled
so activations stay in a useful range (He-scaled convolutions, BatchNorm close to identity with a positive
running variance), so outputs are not saturated and comparisons of two forwards mean something.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch

MANIFEST = Path(__file__).with_name("wav2lip_state_dict_manifest.json")


@lru_cache(maxsize=1)
def manifest_shapes() -> dict[str, tuple[int, ...]]:
    """Key (without ``module.``) -> shape, in the order of the published checkpoints."""
    keys = json.loads(MANIFEST.read_text())["keys"]
    return {key: tuple(shape) for key, shape in keys.items()}


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random generator state dict with the manifest's keys and shapes (no prefix)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = manifest_shapes()
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[1]
        is_conv = len(shape) == 4
        if leaf == "num_batches_tracked":
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif leaf == "weight" and is_conv:
            transposed = _is_transposed(key, shapes)
            fan_in = (shape[0] if transposed else shape[1]) * shape[2] * shape[3]
            # He scaling damped: residual units add their input; 0.8 keeps the sigmoid output spread, unsaturated.
            std = 0.8 * math.sqrt(2.0 / fan_in)
            state[key] = torch.randn(shape, generator=generator) * std
        elif leaf == "weight":  # BatchNorm gamma
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif leaf == "bias":
            state[key] = 0.05 * torch.randn(shape, generator=generator)
        elif leaf == "running_mean":
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif leaf == "running_var":
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            raise ValueError(f"unknown manifest entry {key}")
    return state


def _is_transposed(key: str, shapes: dict[str, tuple[int, ...]]) -> bool:
    """ConvTranspose2d weights are (in, out, k, k): the first unit of decoder blocks 1..6."""
    parts = key.split(".")
    return parts[0] == "face_decoder_blocks" and parts[1] != "0" and parts[2] == "0"


def wrap_checkpoint(
    state: dict[str, torch.Tensor], prefix: str = "module.", with_optimizer: bool = True
) -> dict[str, object]:
    """The dict ``wav2lip_train.save_checkpoint`` writes: state_dict (prefixed keys), optimizer, step, epoch."""
    checkpoint: dict[str, object] = {
        "state_dict": {prefix + key: value for key, value in state.items()},
        "global_step": 123000,
        "global_epoch": 45,
    }
    if with_optimizer:
        # The real files hold Adam moments for every parameter; a small stand-in keeps test files light.
        checkpoint["optimizer"] = {
            "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
            "param_groups": [
                {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]}
            ],
        }
    return checkpoint


def make_random_checkpoint(path: Path, seed: int = 0, prefix: str = "module.", with_optimizer: bool = True) -> Path:
    """Write a random Wav2Lip checkpoint in the official layout to ``path`` (about 145 MB) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap_checkpoint(random_state_dict(seed), prefix=prefix, with_optimizer=with_optimizer), path)
    return path
