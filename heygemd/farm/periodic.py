"""A thread that runs ``tick`` every ``interval`` seconds while a ``with`` block runs: the farm's renewals of locks,
leases and task visibility while a job or a presenter's preparation goes on."""

from __future__ import annotations

import threading


class Periodic:
    """Subclasses say what one ``tick`` does; the first runs ``interval`` s after the block starts."""

    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Periodic":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()
