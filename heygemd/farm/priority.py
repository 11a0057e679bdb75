"""A new priority for a job whose task waits in the broker: its task is taken out of its queue and published again
with the priority, under the job's lock in Redis (the one a worker takes before it runs a job), so no worker starts
the job meanwhile. A worker that took the old task just before finds the lock taken and drops it; the new task is
the job's. Wired in from above (the CLI) as :class:`heygemd.control.Control`'s ``requeue``."""

from __future__ import annotations

import dataclasses
import os
import socket

import structlog

from heygemd.control import Requeue
from heygemd.daemon.claims import ClaimedJob, read_claim
from heygemd.farm.app import task_id
from heygemd.farm.broker import BrokerError
from heygemd.farm.ownership import MISSED_HEARTBEATS, owned_elsewhere
from heygemd.farm.publish import Publisher
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")


def requeuer(settings: Settings) -> Requeue:
    """A ``requeue`` for :class:`heygemd.control.Control` on the farm's broker."""
    publisher = Publisher(settings)
    owner = f"priority {socket.gethostname()}:{os.getpid()}"
    ttl = settings.queue.heartbeat_interval * MISSED_HEARTBEATS

    def requeue(claimed: ClaimedJob, priority: int) -> str | None:
        try:
            with publisher.broker.holding(claimed.job_id, owner, ttl) as held:
                if not held:
                    return "a worker has taken it"
                current = read_claim(claimed.path)
                if current is None:
                    return "it has finished"
                if owned_elsewhere(current, settings.queue):
                    return f"{current.host} runs it"
                moved = dataclasses.replace(current, priority=priority)
                removed = publisher.broker.remove_task(publisher.queue_of(moved), task_id(moved.job_id))
                if not publisher.publish(moved):  # claim.json has the priority: a rescan publishes it with it
                    return "the broker refused the task; it is published again with the new priority shortly"
        except BrokerError as exc:
            return f"the broker is unreachable ({exc})"
        log.info("job.requeued", job_id=claimed.job_id, priority=priority, tasks_replaced=removed)
        return None

    return requeue
