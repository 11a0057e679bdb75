"""Names a scan finds that deserve a warning (a folder name that is not UTF-8, a stray file), each logged when it
first appears: a name that stays is said once, not at every scan, and again once it was gone a scan and is back."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class NewNames:
    """``log.warning(event, <field>=show(name), hint=hint)`` for each name of a scan that the scan before lacked."""

    def __init__(self, log: Any, event: str, field: str, hint: str, show: Callable[[str], str]) -> None:
        self.log = log
        self.event = event
        self.field = field
        self.hint = hint
        self.show = show
        self._seen: set[str] = set()

    def scanned(self, names: Iterable[str]) -> None:
        """The names the latest scan found: those new since the scan before are logged."""
        found = set(names)
        for name in sorted(found - self._seen):
            self.log.warning(self.event, **{self.field: self.show(name)}, hint=self.hint)
        self._seen = found
