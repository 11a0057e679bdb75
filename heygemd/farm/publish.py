"""The intake's side of the farm: publish one task per claimed job, and republish a claimed job whose task was
lost (Redis flushed or restarted without persistence): status.json and claimed/ are the truth, not the broker."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from kombu.exceptions import OperationalError

from heygemd.daemon.claims import ClaimedJob
from heygemd.daemon.jobs import load_job
from heygemd.errors import HeygemdError
from heygemd.farm.app import TASK_NAME, make_app, queue_for, task_id
from heygemd.farm.broker import Broker, BrokerError, shown_url
from heygemd.farm.ownership import disown, owned_elsewhere
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")

PublishError = (OperationalError, *BrokerError)


class Publisher:
    """Publishes claimed jobs to the broker; says when the broker is unreachable (once per change), and tells
    ``on_look`` at every look what is wrong with it (None: it answered) and when (monotonic seconds), for the alert
    after a long outage."""

    def __init__(self, settings: Settings, *, on_look: Callable[[str | None, float], None] | None = None) -> None:
        self.settings = settings
        self.on_look = on_look
        self.app = make_app(settings.queue)
        self.broker = Broker(settings.queue.broker)
        self.shown_url = shown_url(settings.queue.broker)
        self._problem: str | None = None
        self._suspects: set[str] = set()

    def reachable(self) -> bool:
        """Whether the broker answers now. The intake claims nothing while it does not: a claimed job that
        cannot be queued would wait unseen, while one left in the inbox is still the user's."""
        problem = self.broker.problem()
        if problem is not None and problem != self._problem:
            log.warning(
                "queue.unreachable",
                broker=self.shown_url,
                error=problem,
                hint="Jobs stay in the inbox until Redis answers again; check redis-server and "
                "queue.broker (heygemd check).",
            )
        elif problem is None and self._problem is not None:
            log.info("queue.reachable", broker=self.shown_url)
        self._problem = problem
        if self.on_look is not None:
            self.on_look(None if problem is None else f"{self.shown_url}: {problem}", time.monotonic())
        return problem is None

    def queue_of(self, claimed: ClaimedJob) -> str:
        """The job's queue: by the engine and GPU class its job.toml asks for (a job that cannot be read goes to
        the common queue, and the worker records why it fails)."""
        try:
            options = load_job(
                claimed.folder,
                job_id=claimed.job_id,
                name=claimed.name,
                ready_marker=self.settings.intake.ready_marker,
                max_toml_bytes=self.settings.intake.max_job_toml_bytes,
            ).options
        except (HeygemdError, OSError):
            return queue_for(self.settings.queue, None)
        return queue_for(self.settings.queue, options.engine, options.gpu_class)

    def publish(self, claimed: ClaimedJob) -> bool:
        """Hand ``claimed`` to the workers. False (logged) when the broker refused: the job stays claimed and
        :meth:`republish_lost` sends it once the broker is back."""
        try:
            disown(claimed)
        except OSError as exc:  # claim.json refused by the share: a worker would take the intake for its owner
            log.warning(
                "job.publish_failed",
                job_id=claimed.job_id,
                error=f"{exc.filename}: {exc.strerror}",
                hint="The job stays claimed and is published at a later rescan.",
            )
            return False
        queue = self.queue_of(claimed)
        try:
            self.app.send_task(
                TASK_NAME,
                kwargs={"job_id": claimed.job_id, "claim_path": str(claimed.path)},
                task_id=task_id(claimed.job_id),
                queue=queue,
                retry=False,
            )
        except PublishError as exc:
            log.warning(
                "job.publish_failed",
                job_id=claimed.job_id,
                broker=self.shown_url,
                error=str(exc),
                hint="The job stays claimed and is published when the broker is back.",
            )
            return False
        log.info("job.published", job_id=claimed.job_id, queue=queue, task_id=task_id(claimed.job_id))
        return True

    def republish_lost(self, claimed: list[ClaimedJob]) -> list[str]:
        """Publish again each claimed job that has no task queued, no worker holding its lock, and no live
        owner in claim.json, at two checks in a row (a worker may be between taking a task and locking the
        job). Returns the republished job ids."""
        queued = self.broker.queued_task_ids(self.queue_of(job) for job in claimed)
        lost = [
            job
            for job in claimed
            if task_id(job.job_id) not in queued
            and not self.broker.locked(job.job_id)
            and not owned_elsewhere(job, self.settings.queue)
        ]
        republished = []
        for job in lost:
            if job.job_id in self._suspects:
                log.warning(
                    "job.task_lost",
                    job_id=job.job_id,
                    hint="Its task is not in the broker (flushed, or "
                    "Redis restarted without persistence): published again.",
                )
                if self.publish(job):
                    republished.append(job.job_id)
        self._suspects = {job.job_id for job in lost} - set(republished)
        return republished
