"""Job priorities: ``priority`` in job.toml and the API, ``high``, ``normal`` (the default), ``low`` or a number
from 0 to 9. The intake takes the highest first, then the oldest; a job that has started is never pre-empted.

Ten levels because a farm's broker has ten (kombu's Redis transport keeps one list per level, 0-9): a farm keeps
the same order across its workers (:mod:`heygemd.farm.app`). The names stand for numbers with room on either side
(``low`` 2, ``normal`` 5, ``high`` 8), so a job can still be put before every ``high`` one (9) or after every
``low`` one (0).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

LOWEST = 0
HIGHEST = 9
LEVELS: dict[str, int] = {"low": 2, "normal": 5, "high": 8}
NORMAL = LEVELS["normal"]
NAMES: dict[int, str] = {number: name for name, number in LEVELS.items()}


def parse_priority(value: Any) -> Any:
    """A priority as given (a name, a number, a number as text) -> its number; anything else is left for the
    number's own check to refuse with a clear message."""
    if isinstance(value, str):
        text = value.strip().casefold()
        if text in LEVELS:
            return LEVELS[text]
        if text.lstrip("-").isdigit():
            return int(text)
        raise ValueError(f"{value!r} is not a priority: use high, normal, low or a number from {LOWEST} to {HIGHEST}")
    return value


def priority_from(text: str) -> int:
    """A priority as a person writes it (ValueError saying what is allowed)."""
    value = parse_priority(text)
    if not isinstance(value, int) or not LOWEST <= value <= HIGHEST:
        raise ValueError(f"{text!r} is not a priority: use high, normal, low or a number from {LOWEST} to {HIGHEST}")
    return value


Priority = Annotated[
    int,
    BeforeValidator(parse_priority),
    Field(ge=LOWEST, le=HIGHEST),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(LEVELS)},
                {"type": "integer", "minimum": LOWEST, "maximum": HIGHEST},
            ],
            "description": f"high ({LEVELS['high']}), normal ({NORMAL}), low ({LEVELS['low']}) or a number from "
            f"{LOWEST} to {HIGHEST}; higher runs first.",
        }
    ),
]
"""A priority in a model: given as a name or a number, kept as the number."""


def shown(priority: int) -> str:
    """How lists show a priority: its name where it has one (``high``), else the number."""
    return NAMES.get(priority, str(priority))


def effective(changed: int | None, asked: int | None) -> int:
    """A job's priority: as an editor ``changed`` it, else as its job.toml ``asked``, else normal."""
    return changed if changed is not None else asked if asked is not None else NORMAL


def order_key(priority: int | None, arrived: float, name: str) -> tuple[int, float, str]:
    """Sort key of waiting jobs: the highest priority first, then the one that arrived first, then by name."""
    return (-(NORMAL if priority is None else priority), arrived, name)
