"""Token guesses, throttled per client address: after ``LIMIT`` wrong tokens (bearer header or login form)
within ``WINDOW_S``, that address gets ``429 TOO_MANY_FAILURES`` with ``Retry-After`` for every token it sends,
unchecked, until the oldest of those failures is ``WINDOW_S`` old. A session cookie is not a guess: it is
neither counted nor held up."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from heygemd.web.problems import TooManyFailures

LIMIT = 5
WINDOW_S = 300.0
MAX_ADDRESSES = 10_000
"""Addresses remembered at most (the oldest are forgotten first), so a flood of addresses cannot fill memory."""


class FailureThrottle:
    """Failures per client address within the last ``WINDOW_S`` seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        return times

    def check(self, address: str) -> None:
        """Raise TooManyFailures while ``address`` has ``LIMIT`` failures within the window."""
        now = self._clock()
        times = self._recent(address, now)
        if len(times) >= LIMIT:
            wait = max(1, math.ceil(times[0] + WINDOW_S - now))
            raise TooManyFailures(
                f"{LIMIT} wrong tokens from {address} within {WINDOW_S / 60:g} minutes; "
                f"no token from there is checked for {wait} s",
                retry_after=wait,
            )

    def failed(self, address: str) -> None:
        """Count one wrong token from ``address``."""
        now = self._clock()
        times = self._recent(address, now)
        times.append(now)
        self._failures.pop(address, None)
        self._failures[address] = times  # most recent last
        while len(self._failures) > MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
