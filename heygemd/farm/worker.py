"""``heygemd worker``: a Celery worker (one process, one task at a time: one per GPU) that runs the farm's tasks
with a warm engine. SIGTERM: the current video is interrupted at its next batch and the job goes back to the
queue (its finished videos are kept); a second SIGTERM stops at once, as the daemon's does
(:mod:`heygemd.daemon.lifecycle`: the job is resumed by the next worker that takes its task).

Its heartbeat record (``heygemd.farm.presence``: its engines, in Redis) says to the web server and ``heygemd status``
that it renders. Under systemd it sends READY=1 once it consumes its queues, and WATCHDOG=1 (``WatchdogSec=``) from
the daemon's :class:`~heygemd.daemon.lifecycle.Heartbeat` thread: always while it waits for a task (also while Redis
is away), and during a task only while the job reports progress, so a wedged GPU call or ffmpeg lets the watchdog
fire.
An engine idle for ``engine.idle_unload_seconds`` is unloaded by a timer of Celery's consumer event loop: with
the solo pool that loop is the thread that runs the tasks, so the unload can never overlap a task. For the same
reason that loop neither flushes the task's events nor sends the worker's heartbeat events during a job;
:class:`CeleryPresence` does both from the job's heartbeat thread, so Flower and ``celery events`` see the
worker and its task while it renders.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from celery import bootsteps, signals
from celery.exceptions import Reject, WorkerTerminate
from celery.platforms import EX_FAILURE
from celery.utils.sysinfo import load_average
from celery.worker.state import SOFTWARE_INFO, active_requests, all_total_count

from heygemd.daemon.lifecycle import (
    STOP_POLL_SECONDS,
    Heartbeat,
    Hooks,
    Sessions,
    StopFlag,
    StopNow,
    until_stopped,
    warm_sessions,
)
from heygemd.daemon.preparation import LibraryKeeper, Preparer
from heygemd.daemon.presence import this_process
from heygemd.daemon.service import PAUSED_RETRY_SECONDS
from heygemd.daemon.status import utc_now
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.worker import JobOutcome
from heygemd.engines import installed_names
from heygemd.errors import ConfigError
from heygemd.farm.app import TASK_NAME, make_app, task_id, worker_queues
from heygemd.farm.broker import Broker
from heygemd.farm.library import PREPARE_TASK, FarmLibrary
from heygemd.farm.presence import BrokerPresence
from heygemd.farm.publish import PublishError
from heygemd.farm.task import JobRunner
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")


def upkeep_seconds(idle_unload_seconds: float) -> float:
    """How often the worker looks for an idle engine: a quarter of the idle time, between 0.25 s and 30 s."""
    return min(max(idle_unload_seconds / 4, 0.25), 30.0)


class CeleryPresence:
    """The worker in Celery's events while it renders: the task's buffered events (received, started) flushed,
    and a ``worker-heartbeat`` whose ``freq`` is the job's heartbeat interval. The consumer's event dispatcher
    publishes under its own lock on its own connection, so the job's heartbeat thread may use it."""

    def __init__(self, freq_s: float) -> None:
        self.freq_s = freq_s
        self.consumer: Any = None  # set by the consumer bootstep while the consumer runs
        self._lock = threading.Lock()
        self._failing = False

    def beat(self) -> None:
        dispatcher = getattr(self.consumer, "event_dispatcher", None)
        if dispatcher is None or not dispatcher.enabled:
            return
        with self._lock:
            try:
                dispatcher.flush(errors=False, groups=True)
                dispatcher.send(
                    "worker-heartbeat",
                    freq=self.freq_s,
                    active=len(active_requests),
                    processed=all_total_count[0],
                    loadavg=load_average(),
                    **SOFTWARE_INFO,
                )
            except PublishError as exc:  # Redis away: Flower misses a beat, the job goes on
                if not self._failing:
                    log.warning("worker.events_failed", error=str(exc))
                self._failing = True
            else:
                self._failing = False


def consumer_step(sessions: Sessions, presence: CeleryPresence) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep: hands the consumer to ``presence``, and (with ``engine.idle_unload_seconds``) runs a
    timer that unloads the engine once idle that long. The timer entry lives with the consumer's connection
    (cancelled on connection loss, added again on reconnect)."""
    idle_s = sessions.settings.engine.idle_unload_seconds

    class HeygemdStep(bootsteps.StartStopStep):
        name = "heygemd.worker"

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.entry: Any = None

        def start(self, parent: Any) -> None:
            presence.consumer = parent
            if idle_s:
                self.entry = parent.timer.call_repeatedly(upkeep_seconds(idle_s), sessions.unload_if_idle)

        def stop(self, parent: Any) -> None:
            presence.consumer = None
            if self.entry is not None:
                parent.timer.cancel(self.entry)
                self.entry = None

        shutdown = stop

    return HeygemdStep


def back_off(seconds: float, should_stop: Callable[[], bool], tick: Callable[[], None], tick_s: float) -> None:
    """Take no task for ``seconds`` (or until a stop is requested): the solo worker consumes nothing while its
    task function waits here; ``tick`` every ``tick_s`` (the worker's heartbeat event). The watchdog keeps being
    fed (the worker is not in a job)."""
    end = time.monotonic() + seconds
    next_tick = 0.0
    while not should_stop() and (left := end - time.monotonic()) > 0:
        if time.monotonic() >= next_tick:
            tick()
            next_tick = time.monotonic() + tick_s
        time.sleep(min(left, STOP_POLL_SECONDS))


def default_node_name(device: str) -> str:
    """The worker's Celery node name: ``<device>@<host>``, e.g. ``cuda-0@gpu-server-2``."""
    return f"{device.replace(':', '-')}@{socket.gethostname()}"


def run_worker(settings: Settings, *, name: str | None = None, hooks: Hooks = Hooks()) -> int:
    """Serve the farm's tasks until stopped, with the ``hooks`` handed in from above. Returns the process exit
    status."""
    if not settings.queue.broker:
        raise ConfigError(
            "queue.broker is not set: a worker needs the farm's Redis",
            hint='Set [queue] broker = "redis://:PASSWORD@HOST:6379/0" (or HEYGEMD_QUEUE__BROKER).',
        )
    settings.paths.outbox.mkdir(parents=True, exist_ok=True)
    node = name or default_node_name(settings.engine.device)
    log.info("worker.starting", worker=node, device=settings.engine.device, outbox=str(settings.paths.outbox))
    sessions = warm_sessions(settings, hooks)
    queues = worker_queues(settings.queue, sessions.default.engine_name)

    stop = StopFlag()

    def shutting_down(sig: str = "", **_kwargs: Any) -> None:
        """Celery's warm shutdown (SIGTERM, Ctrl-C), sent from its signal handler in the main thread: the first
        stops taking tasks and interrupts the job at its next batch, the second raises StopNow there."""
        stop.request(sig)

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    delivery_tags: dict[str, str] = {}

    def remember_tag(request: Any = None, **_kwargs: Any) -> None:
        delivery_tags[request.id] = request.message.delivery_tag

    signals.task_received.connect(remember_tag, weak=False)
    notifier = Notifier()
    runner: JobRunner
    started = utc_now()
    consumed = {engine for engine in settings.queue.engines or [sessions.default.engine_name] if engine != "auto"}
    record = BrokerPresence(
        Broker(settings.queue.broker),
        node,
        lambda: this_process(
            "worker",
            node,
            [engine for engine in installed_names(settings.engine, settings.paths.models) if engine in consumed],
            started,
        ),
    )
    heartbeat = Heartbeat(notifier, watchdog_interval(), idle=lambda: not runner.busy, presence=record)

    def ready(**_kwargs: Any) -> None:
        log.info("worker.ready", worker=node, queues=", ".join(queues))
        notifier.ready(f"{node}: consuming {', '.join(queues)}")

    signals.worker_ready.connect(ready, weak=False)
    presence = CeleryPresence(settings.queue.heartbeat_interval)
    runner = JobRunner(
        settings,
        sessions,
        should_stop=stop,
        worker=node,
        device=settings.engine.device,
        heartbeat=heartbeat.beat,
        during_job=presence.beat,
        job_ended=hooks.job_ended,
        trouble=hooks.trouble,
    )
    app = make_app(settings.queue)
    app.steps["consumer"].add(consumer_step(sessions, presence))

    def retry_paused(job_id: str, claim_path: str, queue: str, priority: int | None) -> None:
        """A job paused by a full disk (or an unreachable outbox): queue it again at once for any worker with
        room, and let this worker take nothing for PAUSED_RETRY_SECONDS (its disk stays full a while), as a single
        host tries a paused job again after that long. Not queued (Redis away): the intake's rescan republishes it."""
        try:
            app.send_task(
                TASK_NAME,
                kwargs={"job_id": job_id, "claim_path": claim_path},
                task_id=task_id(job_id),
                queue=queue,
                priority=priority,  # the job keeps its place among the others
            )
        except PublishError as exc:
            log.warning("job.requeue_failed", job_id=job_id, error=str(exc), hint="The intake publishes it again.")
        log.warning(
            "job.retry_later",
            job_id=job_id,
            queue=queue,
            worker_pause_s=PAUSED_RETRY_SECONDS,
            hint=f"Queued again for any worker; this worker takes no task for {PAUSED_RETRY_SECONDS:.0f} s. "
            "Free space on the outbox or this host's temp folder (TMPDIR).",
        )
        heartbeat.beat(f"{node}: paused after a full disk; taking tasks again in {PAUSED_RETRY_SECONDS:.0f} s")
        back_off(PAUSED_RETRY_SECONDS, stop, presence.beat, presence.freq_s)
        if not stop():
            log.info("worker.resumed", worker=node)
            heartbeat.beat(f"{node}: idle")

    library = FarmLibrary(settings, runner.broker, app, owner=runner.owner)
    keeper = LibraryKeeper(
        settings, Preparer(settings, sessions, prepared_by=node), lock=library.status_lock, heartbeat=heartbeat.beat
    )

    @app.task(name=PREPARE_TASK)
    def prepare_presenter(name: str) -> str:
        heartbeat.beat(f"{node}: preparing presenter {name}")
        try:
            return library.prepare(keeper, name, stop, queues)
        finally:
            heartbeat.beat(f"{node}: idle")

    stopped_now: list[StopNow] = []

    @app.task(name=TASK_NAME, bind=True)
    def render_job(task: Any, job_id: str, claim_path: str) -> str:
        try:
            result = runner.run(job_id, claim_path, delivery_tags.pop(task.request.id, None))
        except StopNow as exc:  # the second signal, during the job: Celery's own stop-now (a cold shutdown, which
            stopped_now.append(exc)  # puts the task back in its queue); any other BaseException would crash it
            raise WorkerTerminate(EX_FAILURE) from exc
        if result.outcome is JobOutcome.INTERRUPTED:
            raise Reject("stopped: the job goes back to its queue", requeue=True)
        if result.outcome is JobOutcome.PAUSED:
            delivery = task.request.delivery_info or {}
            retry_paused(
                job_id, claim_path, delivery.get("routing_key") or settings.queue.queue, delivery.get("priority")
            )
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

    def serve() -> int:
        with heartbeat:
            try:
                worker.start()
            except StopNow as exc:  # the second signal while the worker waited for a task
                stopped_now.append(exc)
                worker.terminate()
        if stopped_now:
            raise stopped_now[0]
        return int(worker.exitcode or 0)

    return until_stopped(serve, notifier, name="worker")
