"""What the benchmarks that drive real heygemd processes share: polling for a condition with a deadline, and the
times heygemd writes (log ``timestamp``, status.json times) as seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.05


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return value


def seconds(text: str) -> float:
    """Seconds since the epoch of an ISO timestamp heygemd wrote (UTC, ``Z`` or ``+00:00``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
