"""Wall-clock time per pipeline stage, summed over a video (decode, detect, faces, infer, blend, encode).

Stages that run concurrently (``stages.run_stages``) each add their own busy time, so the sum may exceed the
video's total: ``seconds[stage] / total`` is that stage's utilisation, and the busiest stage is the bottleneck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

STAGES = ("decode", "detect", "faces", "infer", "blend", "encode")


@dataclass
class StageTimer:
    """Accumulates seconds per stage name; ``seconds`` is what status.json and the benchmark report."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:  # stages in several threads add to the same dict
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    def timed(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """Yield from ``items``, charging the time spent producing each item to stage ``name``."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    @contextmanager
    def closing_in(self, name: str, manager: AbstractContextManager[T]) -> Iterator[T]:
        """Enter ``manager``; charge the time of its clean exit (e.g. an encoder's flush) to stage ``name``."""
        value = manager.__enter__()
        try:
            yield value
        except BaseException as exc:
            if not manager.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            with self.stage(name):
                manager.__exit__(None, None, None)
