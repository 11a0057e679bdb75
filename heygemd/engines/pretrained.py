"""Pretrained folders (diffusers, transformers) read from local files, as the MuseTalk and LatentSync loaders
share them: stabilityai/sd-vae-ft-mse (``load_vae``), and what a broken file's CheckpointError says.

``from_pretrained`` always runs with ``local_files_only=True`` (no hub call, even when a file is missing; the
engines check their layout first); every missing, unexpected or mismatched tensor it reports is refused instead of
left at its random initialisation.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from safetensors import SafetensorError

from heygemd.engines.model_files import listing
from heygemd.errors import CheckpointError

LATENT_CHANNELS = 4

READ_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    pickle.UnpicklingError,
    SafetensorError,
)
"""What torch.load, diffusers and transformers raise on a truncated or foreign weights file."""


def detail(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), else its type's name."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return text or type(exc).__name__


def loading_problems(info: dict[str, Any]) -> list[str]:
    """What diffusers' or transformers' ``output_loading_info`` reports as wrong, one line per kind."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        items = [str(item) for item in info.get(kind) or []]
        if items:
            problems.append(f"{kind.replace('_', ' ')}: {listing(items)}")
    return problems


def read_json(path: Path, hint: str) -> dict[str, Any]:
    """The JSON object of a config file; CheckpointError naming it (with ``hint``) when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"not a readable JSON config ({exc})", path=path, hint=hint) from None
    if not isinstance(document, dict):
        raise CheckpointError("the config is not a JSON object", path=path, hint=hint)
    return document


def load_vae(config: Path, weights: Path, *, engine: str, hint: str) -> AutoencoderKL:
    """The VAE of ``config`` (``.../config.json``) and ``weights`` (``diffusion_pytorch_model.safetensors`` or
    ``.bin`` beside it), fp32 on the CPU in eval mode. ``engine`` names who needs its 4 latent channels in the
    error; ``hint`` says where the files come from."""

    def fail(message: str, path: Path) -> CheckpointError:
        return CheckpointError(message, path=path, hint=hint)

    read_json(config, hint)  # a broken config.json named before diffusers reads it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vae, info = AutoencoderKL.from_pretrained(
                config.parent,
                local_files_only=True,
                output_loading_info=True,
                use_safetensors=weights.suffix == ".safetensors",
                low_cpu_mem_usage=False,
            )
    except READ_ERRORS as exc:
        problem = f"cannot load the VAE, the file may be truncated or not sd-vae-ft-mse ({detail(exc)})"
        raise fail(problem, weights) from None
    problems = loading_problems(info)
    if problems:
        raise fail("the weights do not fit config.json: " + "; ".join(problems), weights)
    if vae.config.latent_channels != LATENT_CHANNELS:
        raise fail(f"latent_channels {vae.config.latent_channels}, {engine} needs {LATENT_CHANNELS}", config)
    return vae.eval()
