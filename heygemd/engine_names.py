"""The lip-sync engines' names: the one list of them, on the ground floor.

Settings, job.toml options, the CLI, the web form and the API validate and offer these names without importing
an engine. What each engine needs, how it loads and what ``heygemd check`` says about it is its spec in
``heygemd.engines.registry``, which checks at import that its table lists exactly these names, in this order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

EngineId = Literal["musetalk", "wav2lip", "mouthwarp", "latentsync"]
"""Every engine, as settings, job.toml, status.json and the CLI spell it."""
EngineName = Literal["auto", EngineId]
"""What a setting or a job may name: an engine, or ``auto`` (the first of the registry's ``auto`` order whose
files are there)."""

AUTO = "auto"
ENGINES: tuple[str, ...] = get_args(EngineId)
CHOICES: tuple[str, ...] = get_args(EngineName)
"""``auto`` and every engine: the CLI's ``--engine`` choices, the web form's and the API's."""


def listed(names: Iterable[str] = CHOICES) -> str:
    """The names as a hint spells them: ``"auto", "musetalk", "wav2lip", "mouthwarp" or "latentsync"``."""
    *rest, last = [f'"{name}"' for name in names]
    return f"{', '.join(rest)} or {last}" if rest else last
