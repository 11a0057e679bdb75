"""Failed logins and wrong keys, throttled per client address and per account: after ``LIMIT`` failures within
``WINDOW_S`` (a wrong token, password or API key, by bearer header or login form), that address, or that account
from any address, gets ``429 TOO_MANY_FAILURES`` with ``Retry-After`` for every secret it sends, unchecked, until
the oldest of those failures is ``WINDOW_S`` old. A session cookie is not a guess: it is neither counted nor held
up, so people already logged in go on working.

What is counted is named by a subject, ``address 203.0.113.7`` or ``account anna``; an account that does not
exist is counted like one that does, so the answers do not tell which names exist.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from heygemd.web.problems import TooManyFailures

LIMIT = 5
WINDOW_S = 300.0
MAX_SUBJECTS = 10_000
"""Subjects remembered at most (the oldest are forgotten first), so a flood of addresses cannot fill memory."""


def address(client: str) -> str:
    return f"address {client}"


def account(name: str) -> str:
    return f"account {name}"


class FailureThrottle:
    """Failures per subject within the last ``WINDOW_S`` seconds of ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, subject: str, now: float) -> deque[float]:
        times = self._failures.get(subject, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        return times

    def check(self, *subjects: str) -> None:
        """Raise TooManyFailures while any of ``subjects`` has ``LIMIT`` failures within the window."""
        now = self._clock()
        for subject in subjects:
            times = self._recent(subject, now)
            if len(times) >= LIMIT:
                wait = max(1, math.ceil(times[0] + WINDOW_S - now))
                raise TooManyFailures(
                    f"{LIMIT} wrong tokens or passwords for {subject} within {WINDOW_S / 60:g} minutes; "
                    f"nothing from there is checked for {wait} s",
                    retry_after=wait,
                )

    def failed(self, *subjects: str) -> None:
        """Count one failure against each of ``subjects``."""
        now = self._clock()
        for subject in subjects:
            times = self._recent(subject, now)
            times.append(now)
            self._failures.pop(subject, None)
            self._failures[subject] = times  # most recent last
        while len(self._failures) > MAX_SUBJECTS:
            del self._failures[next(iter(self._failures))]
