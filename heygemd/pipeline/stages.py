"""Stages that run at the same time: each in its own thread, neighbours joined by bounded queues.

``run_stages(source, stages, sink)`` iterates ``source`` in one thread, runs each stage's ``work`` in a thread of
its own and hands the results to ``sink`` in the calling thread, in source order. The slowest stage sets the
pace; the others wait on their queues. Threads suffice because the heavy parts (numpy, OpenCV, torch, ffmpeg
pipes) release the GIL.

Memory is bounded by the queues: at most ``depth`` items wait between two neighbours and one is in work in each
thread, whatever the length of the source.

The first exception raised anywhere (in the source, a stage or the sink) stops every thread at its next item;
all threads are joined before ``run_stages`` returns or raises, so whoever owns the source and the sink (an
ffmpeg decoder, an encoder) can close them safely afterwards. The exception propagates as it was raised, in the
caller's thread.

This module knows no stage: ``run.py`` says which stages run in which order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

POLL_SECONDS = 0.1
"""How often a thread blocked on a full or empty queue looks whether the run was stopped."""


@dataclass(frozen=True)
class Stage:
    name: str
    """Names the stage's thread (``heygemd-<name>``), e.g. in py-spy or a thread dump."""
    work: Callable[[Any], Any]
    """One item in, one item out."""


class _Stopped(Exception):
    """Raised inside a thread blocked on a queue once the run stops; ends that thread quietly."""


_END = object()


def run_stages(
    source: Iterable[Any],
    stages: Sequence[Stage],
    sink: Callable[[Any], None],
    *,
    depth: int = 1,
    source_name: str = "source",
) -> None:
    """Pass every item of ``source`` through ``stages`` in order, then to ``sink``; see the module docstring."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    stop = threading.Event()
    errors: list[BaseException] = []
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue[Any], item: Any) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue[Any]) -> Any:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def feed() -> None:
        for item in source:
            put(queues[0], item)
        put(queues[0], _END)

    def step(stage: Stage, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> Callable[[], None]:
        def run() -> None:
            while (item := get(inbox)) is not _END:
                put(outbox, stage.work(item))
            put(outbox, _END)

        return run

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the caller's thread, raised there
                errors.append(exc)
                stop.set()

        return run

    bodies = [(source_name, feed)] + [(s.name, step(s, queues[i], queues[i + 1])) for i, s in enumerate(stages)]
    threads = [threading.Thread(target=guarded(body), name=f"heygemd-{name}", daemon=True) for name, body in bodies]
    for thread in threads:
        thread.start()
    try:
        while (item := get(queues[-1])) is not _END:
            sink(item)
    except _Stopped:
        pass  # a thread failed: its error is raised below
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
