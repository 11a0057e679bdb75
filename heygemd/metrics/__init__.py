"""Prometheus metrics: what heygemd exports and where each number comes from.

- The jobs (:mod:`.jobs`): computed at scrape time from the truth on disk (the outbox's status.json files, the
  claims, the inbox, the caches), so they are complete in whichever process serves them (``heygemd web`` on its own,
  or inside ``heygemd run``), for one host or a whole farm, and survive restarts. The web server serves them at
  ``GET /metrics`` (:func:`web_registry`).
- The GPUs of this machine (:mod:`.gpu`), read with NVML at scrape time.
- What only a running process knows (:mod:`.process`): the engines it holds loaded, the notifications it sent,
  and prometheus_client's own ``process_*`` and ``python_*`` series. A farm worker serves them, with its machine's
  GPUs, on a port of its own (:func:`serve_worker_metrics`, ``heygemd worker --metrics-port N``); the web server
  serves those of its own process.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from heygemd.daemon.schedule import Schedule
from heygemd.errors import ConfigError
from heygemd.metrics.gpu import GpuCollector
from heygemd.metrics.jobs import JobsCollector
from heygemd.metrics.process import NOTIFICATIONS, LoadedEngine, watch_engines, watch_sessions
from heygemd.settings import PathsSettings

__all__ = [
    "NOTIFICATIONS",
    "LoadedEngine",
    "serve_worker_metrics",
    "watch_engines",
    "watch_sessions",
    "web_registry",
    "worker_registry",
]


def web_registry(paths: PathsSettings, hours: tuple[str, ...] = ()) -> CollectorRegistry:
    """What ``GET /metrics`` serves: the jobs of ``paths`` and the intake (its rendering ``hours``, the pause), this
    machine's GPUs, this process's own series."""
    registry = CollectorRegistry()
    registry.register(JobsCollector(paths, schedule=Schedule(paths.state_dir, hours)))
    registry.register(GpuCollector())
    registry.register(REGISTRY)
    return registry


def worker_registry() -> CollectorRegistry:
    """What a farm worker serves on its metrics port: this machine's GPUs and this process's own series."""
    registry = CollectorRegistry()
    registry.register(GpuCollector())
    registry.register(REGISTRY)
    return registry


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
    """Serve :func:`worker_registry` over HTTP on ``host``:``port`` (port 0: any free one) from a daemon thread
    (prometheus_client's own server: any path answers the exposition). ``server.shutdown()`` stops it."""
    try:
        return start_http_server(port, addr=host, registry=worker_registry())
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}",
            hint="Choose a free --metrics-port, or stop the program that uses it.",
        ) from None
