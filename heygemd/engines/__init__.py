"""Lip-sync engines: each implements ``heygemd.pipeline.engine_contract.Engine``; ``registry`` lists them.

``musetalk``: MuseTalk 1.5 (256x256 latent inpainting, Whisper features), files in ``models/musetalk/``.
``wav2lip``: the published Wav2Lip generator, checkpoint supplied by the user in ``models/``.
``mouthwarp``: weights-free, audio-driven mouth animation from face landmarks; runs on any CPU.
Importing this package does not import torch: the torch engines are imported only when chosen.
"""

from __future__ import annotations

from heygemd.engines.registry import (
    CHECKPOINT_NAMES,
    SPECS,
    EngineSpec,
    ModelFiles,
    find_checkpoint,
    resolve,
    resolve_engine_name,
    spec_named,
)

__all__ = [
    "CHECKPOINT_NAMES",
    "SPECS",
    "EngineSpec",
    "ModelFiles",
    "find_checkpoint",
    "resolve",
    "resolve_engine_name",
    "spec_named",
    "torch_device_name",
]


def torch_device_name(spec: str) -> str:
    """``engine.device`` (auto, cpu, cuda, cuda:N) as torch names it, checked (ConfigError); imports torch."""
    from heygemd.engines.torch_device import resolve_device

    return str(resolve_device(spec))
