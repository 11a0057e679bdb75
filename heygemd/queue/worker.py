"""``heygemd worker``: a Celery worker (one process, one task at a time: one per GPU) that runs the farm's tasks
with a warm engine. SIGTERM: the current video is interrupted at its next batch and the job goes back to the
queue (its finished videos are kept); a second SIGTERM stops at once (the job is resumed elsewhere)."""

from __future__ import annotations

import os
import socket
from typing import Any

import structlog
from celery import signals
from celery.exceptions import Reject

from heygemd.daemon.service import Sessions
from heygemd.daemon.systemd import Notifier
from heygemd.daemon.worker import JobOutcome
from heygemd.errors import ConfigError
from heygemd.queue.app import TASK_NAME, make_app, worker_queues
from heygemd.queue.task import JobRunner
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.queue")


class ShutdownFlag:
    """Set by Celery's warm shutdown (SIGTERM, Ctrl-C). Only a plain attribute is set in the signal handler."""

    def __init__(self) -> None:
        self.requested = 0

    def __call__(self) -> bool:
        return self.requested > 0

    def on_shutting_down(self, **_kwargs: Any) -> None:
        self.requested += 1
        if self.requested > 1:  # the second stop signal: now (the job's lock expires; another worker resumes it)
            os._exit(1)


def default_node_name(device: str) -> str:
    """The worker's Celery node name: ``<device>@<host>``, e.g. ``cuda-0@gpu-server-2``."""
    return f"{device.replace(':', '-')}@{socket.gethostname()}"


def run_worker(settings: Settings, *, name: str | None = None) -> int:
    """Serve the farm's tasks until stopped. Returns the process exit status."""
    if not settings.queue.broker:
        raise ConfigError(
            "queue.broker is not set: a worker needs the farm's Redis",
            hint='Set [queue] broker = "redis://:PASSWORD@HOST:6379/0" (or HEYGEMD_QUEUE__BROKER).',
        )
    settings.paths.outbox.mkdir(parents=True, exist_ok=True)
    sessions = Sessions(settings)
    node = name or default_node_name(settings.engine.device)
    queues = worker_queues(settings.queue, sessions.default.engine_name)
    log.info(
        "worker.starting",
        worker=node,
        engine=sessions.default.engine_name,
        device=settings.engine.device,
        queues=", ".join(queues),
        outbox=str(settings.paths.outbox),
    )
    sessions.default.warm_up()

    stop = ShutdownFlag()
    signals.worker_shutting_down.connect(stop.on_shutting_down, weak=False)
    delivery_tags: dict[str, str] = {}

    def remember_tag(request: Any = None, **_kwargs: Any) -> None:
        delivery_tags[request.id] = request.message.delivery_tag

    signals.task_received.connect(remember_tag, weak=False)
    notifier = Notifier()

    def ready(**_kwargs: Any) -> None:
        log.info("worker.ready", worker=node, queues=", ".join(queues))
        notifier.ready(f"{node}: consuming {', '.join(queues)}")

    signals.worker_ready.connect(ready, weak=False)
    runner = JobRunner(settings, sessions, should_stop=stop, worker=node, device=settings.engine.device)
    app = make_app(settings.queue)

    @app.task(name=TASK_NAME, bind=True)
    def render_job(task: Any, job_id: str, claim_path: str) -> str:
        result = runner.run(job_id, claim_path, delivery_tags.pop(task.request.id, None))
        if result.outcome is JobOutcome.INTERRUPTED:
            raise Reject("stopped: the job goes back to its queue", requeue=True)
        return result.action if result.outcome is None else result.outcome.value

    worker = app.Worker(
        hostname=node,
        concurrency=1,
        pool_cls="solo",
        queues=queues,
        prefetch_multiplier=1,
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
        quiet=True,
        loglevel=settings.logging.level.upper(),
    )
    worker.start()
    notifier.stopping("stopped")
    log.info("worker.stopped", worker=node)
    return int(worker.exitcode or 0)
