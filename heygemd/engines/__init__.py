"""Lip-sync engines: each a module implementing ``heygemd.pipeline.engine_contract.Engine``, listed in
``registry`` (what each needs, how it loads, what ``heygemd check`` says of it).

Importing this package does not import torch: the torch engines are imported only when chosen.
"""

from __future__ import annotations

from heygemd.engines.model_files import ModelFiles
from heygemd.engines.registry import (
    SPECS,
    EngineSpec,
    available_names,
    check_installed,
    installed_names,
    resolve,
    resolve_engine_name,
)

__all__ = [
    "SPECS",
    "EngineSpec",
    "ModelFiles",
    "available_names",
    "check_installed",
    "installed_names",
    "resolve",
    "resolve_engine_name",
    "torch_device_name",
]


def torch_device_name(spec: str) -> str:
    """``engine.device`` (auto, cpu, cuda, cuda:N) as torch names it, checked (ConfigError); imports torch."""
    from heygemd.engines.torch_device import resolve_device

    return str(resolve_device(spec))
