"""What only the running process knows, kept in prometheus_client's process registry (``REGISTRY``, which also
holds the library's ``process_*`` and ``python_*`` series): which engines it holds loaded, and the notifications it
sent. A process that renders reports its engines with :func:`watch_engines`; the notify package's hooks count the
notifications (:data:`NOTIFICATIONS`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple, Protocol

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from heygemd.daemon.status import CallbackRecord
from heygemd.settings import Settings


class LoadedEngine(NamedTuple):
    """An engine a process holds: its name, its device (``engine.device`` as configured) and whether its model is
    in memory now (it is unloaded after ``engine.idle_unload_seconds`` without work)."""

    engine: str
    device: str
    loaded: bool


EngineSource = Callable[[], Iterable[LoadedEngine]]


class WarmSession(Protocol):
    """What is read of a :class:`heygemd.lipsync.LipSyncSession`."""

    @property
    def engine_name(self) -> str: ...

    @property
    def loaded(self) -> bool: ...


class WarmSessions(Protocol):
    """What is read of the daemon's warm engines (``Sessions``: the configured engine, kept warm between jobs)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def default(self) -> WarmSession: ...


class EngineCollector(Collector):
    """``heygemd_engine_loaded``: 1 per engine whose model is in memory, 0 for one unloaded, from every source."""

    def __init__(self) -> None:
        self._sources: list[EngineSource] = []
        self._lock = threading.Lock()

    def watch(self, source: EngineSource) -> None:
        with self._lock:
            self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "heygemd_engine_loaded",
            "1 while the engine's model is loaded in this process, 0 after it was unloaded for idleness.",
            labels=["engine", "device"],
        )
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            for engine in source():
                family.add_metric([engine.engine, engine.device], 1.0 if engine.loaded else 0.0)
        yield family


Channel = Literal["callback", "apprise"]


class Notifications:
    """``heygemd_notifications_sent_total`` and ``heygemd_notifications_failed_total`` by channel: a callback
    delivered (a 2xx answer) or given up after its last attempt; an Apprise message sent or not."""

    def __init__(self) -> None:
        labels = ["channel"]
        self.sent = Counter("heygemd_notifications_sent", "Notifications delivered.", labels, registry=None)
        self.failed = Counter(
            "heygemd_notifications_failed",
            "Notifications that could not be delivered (a callback after its last attempt).",
            labels,
            registry=None,
        )
        for channel in ("callback", "apprise"):  # both series exist from the start, at 0
            self.sent.labels(channel)
            self.failed.labels(channel)

    def counted(self, channel: Channel, ok: bool) -> None:
        (self.sent if ok else self.failed).labels(channel).inc()

    def callback_changed(self, job_id: str, record: CallbackRecord) -> None:
        """A :data:`heygemd.notify.callbacks.OnChange`: counts a delivery once it is delivered or given up."""
        if record.state != "pending":
            self.counted("callback", record.state == "delivered")

    def alert_sent(self, ok: bool) -> None:
        """For :class:`heygemd.notify.alerts.Alerts` (``on_sent``)."""
        self.counted("apprise", ok)


ENGINES = EngineCollector()
NOTIFICATIONS = Notifications()
for _collector in (ENGINES, NOTIFICATIONS.sent, NOTIFICATIONS.failed):
    REGISTRY.register(_collector)


def watch_engines(source: EngineSource) -> None:
    """Export the engines ``source`` lists (called at each scrape) as this process's ``heygemd_engine_loaded``."""
    ENGINES.watch(source)


def watch_sessions(sessions: WarmSessions) -> None:
    """Export the configured engine of a rendering process's ``Sessions`` (``heygemd run``, ``heygemd worker``), on
    its ``engine.device``. (An engine a job.toml asks for is loaded for that job only and unloaded after it.)"""
    device = sessions.settings.engine.device
    watch_engines(lambda: [LoadedEngine(sessions.default.engine_name, device, sessions.default.loaded)])
