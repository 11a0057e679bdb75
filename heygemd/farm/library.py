"""The presenter library in a farm. The library and presenters.json are on the NAS like the inbox; the intake keeps
the library's state (:class:`~heygemd.daemon.preparation.LibraryKeeper`, as a single host does) but sends each
presenter to prepare as a task (``heygemd.prepare_presenter``, on the common queue, at the lowest priority: a
waiting job goes first) instead of preparing it; the
worker that takes the task prepares it with its warm engines, holding the presenter's lock in Redis (the one jobs
take: :meth:`Broker.holding`, ``heygemd:lock:library/<name>``), so a presenter is prepared by one worker at a time
and a task sent twice is dropped. Jobs first, as on a single host: a job task that waits in the worker's queues
(looked for at most once per ``intake.poll_interval``) interrupts the preparation; its task is sent again, behind
the job. presenters.json is changed by the intake and the workers, each change under a
lock of its own (``heygemd:lock:library/:status``; a presenter's name never holds ``/`` nor ``:``).

The face tracks and the engines' preparations are written where ``paths.cache`` says: by default
``<state>/cache``, on the NAS, so every worker reads what one prepared; a worker with a cache of its own (a local
``paths.cache``) computes its own entries at its first render of a presenter (bench/README.md measures both).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog
from celery import Celery

from heygemd.daemon.library import LibraryFile
from heygemd.daemon.preparation import JobsFirst, LibraryKeeper
from heygemd.daemon.priority import LOWEST
from heygemd.farm.app import job_of_task
from heygemd.farm.broker import Broker, BrokerError, broker_priority
from heygemd.farm.ownership import MISSED_HEARTBEATS
from heygemd.farm.periodic import Periodic
from heygemd.farm.publish import PublishError
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")

PREPARE_TASK = "heygemd.prepare_presenter"
LOCK_PREFIX = "library/"
STATUS_LOCK = "library/:status"
STATUS_LOCK_WAIT_S = 10.0
"""How long a change of presenters.json waits for another's to finish (each takes milliseconds)."""
LOCK_POLL_S = 0.05


def presenter_lock(name: str) -> str:
    """The presenter's lock (a key of the job locks' kind; no job id holds ``/``)."""
    return LOCK_PREFIX + name


def presenter_task_id(name: str) -> str:
    """The task id of a presenter's preparation: from its name alone, as a job's is from its id."""
    return f"heygemd-presenter:{name}"


class FarmLibrary:
    """The library's farm side for one process: the intake's hand-off (:meth:`publish`, :meth:`in_flight`), the
    workers' task (:meth:`prepare`), and presenters.json's lock for both (:meth:`status_lock`)."""

    def __init__(self, settings: Settings, broker: Broker, app: Celery, owner: str | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.app = app
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._lock_failing = False

    # -- presenters.json

    @contextmanager
    def status_lock(self) -> Iterator[None]:
        """presenters.json's lock for the block: waits for another holder (at most STATUS_LOCK_WAIT_S); with Redis
        away (or the wait over) the change is made without it, and said once: a lost update is redone by the next
        scan, while a state that is never written would leave the page behind."""
        ttl = STATUS_LOCK_WAIT_S
        held = False
        try:
            deadline = time.monotonic() + STATUS_LOCK_WAIT_S
            while not (held := self.broker.acquire(STATUS_LOCK, self.owner, ttl)) and time.monotonic() < deadline:
                time.sleep(LOCK_POLL_S)
            self._lock_failing = False
        except BrokerError as exc:
            if not self._lock_failing:
                log.warning("library.unlocked_write", error=str(exc), hint="presenters.json written without its lock")
            self._lock_failing = True
        try:
            yield
        finally:
            if held:
                try:
                    self.broker.release(STATUS_LOCK, self.owner)
                except BrokerError:  # it expires by itself
                    pass

    # -- the intake

    def publish(self, found: LibraryFile) -> bool:
        """Send ``found`` to the workers (False, logged, when the broker refuses: sent at a later round)."""
        return self._send(found.name)

    def _send(self, name: str) -> bool:
        try:
            self.app.send_task(
                PREPARE_TASK,
                kwargs={"name": name},
                task_id=presenter_task_id(name),
                queue=self.settings.queue.queue,
                priority=broker_priority(LOWEST),  # jobs first: behind every waiting job but one of priority 0
                retry=False,
            )
        except PublishError as exc:  # the presenter stays queued
            log.warning("presenter.publish_failed", presenter=name, error=str(exc))
            return False
        log.info("presenter.published", presenter=name, queue=self.settings.queue.queue)
        return True

    def in_flight(self, name: str) -> bool:
        """Whether a worker holds the presenter's lock or its task waits in the queue (True when Redis cannot say:
        nothing is sent twice while it is away)."""
        try:
            if self.broker.locked(presenter_lock(name)):
                return True
            queued = self.broker.queued_task_ids([self.settings.queue.queue])
        except BrokerError:
            return True
        return presenter_task_id(name) in queued

    # -- a worker

    def prepare(self, keeper: LibraryKeeper, name: str, should_stop: Callable[[], bool], queues: list[str]) -> str:
        """The task: prepare ``name`` under its lock (renewed while it runs); ``duplicate`` when another worker holds
        it, ``yielded`` when a job task waiting in ``queues`` (the worker's) interrupted it (its task is sent again,
        behind the job, once the lock is released), ``dropped`` when it is not to be prepared any more (or a stop
        interrupted it), else ``prepared``."""
        interval = self.settings.queue.heartbeat_interval
        ttl = interval * MISSED_HEARTBEATS
        key = presenter_lock(name)
        waiting: list[str] = []
        first = JobsFirst(lambda _now: self._waiting_job(queues), self.settings.intake.poll_interval)

        def yield_to() -> str | None:
            job = first()
            if job is not None:
                waiting.append(job)
            return job

        with self.broker.holding(key, self.owner, ttl) as held:
            if not held:
                log.info("presenter.duplicate_task", presenter=name, why="another worker prepares it")
                return "duplicate"
            with _Renewing(self.broker, key, self.owner, interval, ttl):
                done = keeper.prepare_one(name, should_stop, yield_to=yield_to)
        if done:
            return "prepared"
        if waiting:  # sent again only now: a worker taking it while this one held the lock would drop it
            self._send(name)  # refused: the intake sends it again once it sees no task of it
            return "yielded"
        return "dropped"

    def _waiting_job(self, queues: list[str]) -> str | None:
        """The first job whose task waits in ``queues`` (None when none, or Redis cannot say)."""
        try:
            tasks = self.broker.queued_in_order_of(queues)
        except BrokerError:
            return None
        return next((job for task in tasks if (job := job_of_task(task)) is not None), None)


class _Renewing(Periodic):
    """Renews a lock every ``interval`` s from a thread while a preparation runs (it may report no progress for
    long: an engine's pass over every frame)."""

    def __init__(self, broker: Broker, key: str, owner: str, interval: float, ttl: float) -> None:
        super().__init__(interval, "heygemd-presenter-lock")
        self.broker, self.key, self.owner, self.ttl = broker, key, owner, ttl

    def tick(self) -> None:
        try:
            self.broker.renew(self.key, self.owner, self.ttl)
        except BrokerError as exc:
            log.warning("presenter.lock_renew_failed", key=self.key, error=str(exc))
