"""Cancelling in a farm: a claimed job whose task still waits in Redis is finished as cancelled at once by whoever
asks (``heygemd cancel``, the dashboard), under the job's lock in Redis, the one a worker takes before it runs a
job. A worker that holds the lock is running the job and stops it itself (the request file); a worker that takes
the task afterwards finds the job finished and drops the task."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack

import structlog

from heygemd.daemon.cancel import FinishIdle, finish_unstarted
from heygemd.daemon.claims import ClaimedJob, read_claim, take_over
from heygemd.daemon.hooks import JobEnded, no_job_ended
from heygemd.daemon.status import CancelStatus, JobStatus
from heygemd.farm.broker import Broker, BrokerError
from heygemd.farm.ownership import MISSED_HEARTBEATS, owned_elsewhere
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")


def idle_finisher(settings: Settings, job_ended: JobEnded = no_job_ended) -> FinishIdle:
    """A ``finish_idle`` for :func:`heygemd.daemon.cancel.cancel_job` on a farm's broker; ``job_ended`` is told of
    the job it finishes."""
    broker = Broker(settings.queue.broker)
    owner = f"cancel {socket.gethostname()}:{os.getpid()}"
    ttl = settings.queue.heartbeat_interval * MISSED_HEARTBEATS

    def finish(claimed: ClaimedJob, request: CancelStatus) -> JobStatus | None:
        with ExitStack() as stack:
            try:
                held = stack.enter_context(broker.holding(claimed.job_id, owner, ttl))
            except BrokerError as exc:  # Redis away: the worker that takes the task acts on the request
                log.warning("job.cancel_deferred", job_id=claimed.job_id, error=str(exc))
                return None
            if not held:
                return None  # a worker runs the job: it acts on the request
            current = read_claim(claimed.path)
            if current is None or owned_elsewhere(current, settings.queue):
                return None
            return finish_unstarted(
                take_over(current),
                settings.paths.outbox,
                request,
                ready_marker=settings.intake.ready_marker,
                max_toml_bytes=settings.intake.max_job_toml_bytes,
                job_ended=job_ended,
            )

    return finish
