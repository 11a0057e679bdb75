"""The farm's workers in the renderers' heartbeat records (:mod:`heygemd.daemon.presence`): each ``heygemd worker``
keeps its record in Redis under a key that expires after ``MISSED_BEATS`` beats, so a worker that is killed or
loses its host drops out by itself; the web server and ``heygemd status`` read them, with the state folder's
records of any single-host daemon sharing the inbox."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from pydantic import ValidationError

from heygemd.daemon.presence import BEAT_SECONDS, MISSED_BEATS, Renderer, live_renderers
from heygemd.daemon.status import utc_now
from heygemd.farm.broker import Broker, BrokerError
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")

READ_TIMEOUT_S = 1.0
"""A page must not hang on an unreachable Redis: the records are read with this timeout..."""
READ_EVERY_S = 1.0
"""...and at most this often (every client of the live pages asks four times a second)."""


class BrokerPresence:
    """A worker's record in Redis (a ``Presence`` of :class:`heygemd.daemon.lifecycle.Heartbeat`). Redis away:
    said once, and the worker goes on (its key expires; the next beat that reaches Redis writes it again)."""

    def __init__(self, broker: Broker, name: str, record: Callable[[], Renderer]) -> None:
        self.broker = broker
        self.name = name
        self.record = record
        self._failing = False

    def announce(self) -> None:
        try:
            self.broker.set_renderer(
                self.name, self.record().model_dump_json().encode("utf-8"), BEAT_SECONDS * MISSED_BEATS
            )
        except BrokerError as exc:
            if not self._failing:
                log.warning("presence.write_failed", worker=self.name, error=str(exc))
            self._failing = True
        else:
            self._failing = False

    def withdraw(self) -> None:
        try:
            self.broker.drop_renderer(self.name)
        except BrokerError as exc:  # the key expires by itself
            log.warning("presence.remove_failed", worker=self.name, error=str(exc))


def farm_renderers(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> Callable[[], list[Renderer]]:
    """The live renderers of a farm, for its front doors (``heygemd.control.Control``): the workers' records in
    Redis (none while Redis does not answer) and the state folder's. Read at most every ``READ_EVERY_S``."""
    broker = Broker(settings.queue.broker, timeout_s=READ_TIMEOUT_S)
    state = settings.paths.state_dir
    last: list[tuple[float, list[Renderer]]] = []

    def renderers() -> list[Renderer]:
        if last and clock() - last[0][0] < READ_EVERY_S:
            return last[0][1]
        now = utc_now()
        found = live_renderers(state, now=now)
        try:
            records = broker.renderer_records()
        except BrokerError:
            records = []
        for raw in records:
            try:
                record = Renderer.model_validate_json(raw)
            except ValidationError:  # not heygemd's: left alone
                continue
            if record.live(now):
                found.append(record)
        found.sort(key=lambda r: (r.name, r.host, r.pid))
        last[:] = [(clock(), found)]
        return found

    return renderers
