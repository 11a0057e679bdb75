"""What heygemd asks Redis directly, besides Celery: is it reachable, which tasks wait in a queue, the job
locks that make sure one worker at a time runs a job (a duplicate task finds the lock taken and is dropped), and
the workers' heartbeat records (one key each, expiring when the worker stops beating).

Queued tasks are read from kombu's Redis layout: a queue is one list per priority level (:func:`level_lists`: the
first named after the queue, the others ``<queue>\\x06\\x16<level>``), each entry a JSON message whose
``headers.id`` is the task id; a delivered, unacknowledged message sits in the ``unacked`` hash with its delivery
time in the ``unacked_index`` sorted set (restored to its queue after ``visibility_timeout``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis
import structlog

from heygemd.daemon.priority import HIGHEST, LOWEST

log = structlog.get_logger("heygemd.farm")

LOCK_PREFIX = "heygemd:lock:"
RENDERER_PREFIX = "heygemd:renderer:"
UNACKED_INDEX = "unacked_index"  # kombu's Channel.unacked_index_key

BROKER_LEVELS = list(range(HIGHEST - LOWEST + 1))
"""kombu's Redis transport keeps one list per priority level (``priority_steps``); all ten, so every job priority
has its own and the order of jobs holds across workers."""
PRIORITY_SEPARATOR = "\x06\x16"
"""Between a queue's name and its level in the name of a level's list (kombu's ``Channel.sep``)."""


def broker_priority(priority: int) -> int:
    """A job priority (0-9, higher first) as the broker's (0-9, where 0 is taken first)."""
    return HIGHEST - priority


def level_lists(queue: str) -> list[str]:
    """The Redis lists of ``queue``, the one taken first first: the level 0 list is named as the queue itself."""
    return [queue if level == 0 else f"{queue}{PRIORITY_SEPARATOR}{level}" for level in BROKER_LEVELS]


BrokerError = (redis.exceptions.RedisError, OSError)
"""What a call to an unreachable or failing Redis raises."""

_RENEW = """
local owner = redis.call('get', KEYS[1])
if owner == false or owner == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
    return 1
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def shown_url(url: str) -> str:
    """The broker URL for logs and ``heygemd check``: its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Broker:
    """A small Redis client on the broker URL (the same database Celery uses)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def problem(self) -> str | None:
        """None when Redis answers a PING, else what is wrong (for logs and ``heygemd check``)."""
        try:
            self.client.ping()
        except BrokerError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _queued(self, queues: Iterable[str]) -> Iterator[tuple[str, bytes | str, str]]:
        """(list, raw message, task id) of every task waiting in ``queues``, the one taken first first."""
        for queue in dict.fromkeys(queues):
            for key in level_lists(queue):
                for raw in reversed(self.client.lrange(key, 0, -1)):  # LPUSH in, RPOP out: the oldest is last
                    try:
                        task = json.loads(raw).get("headers", {}).get("id")
                    except (ValueError, AttributeError):  # not a kombu message: not ours to read
                        continue
                    if isinstance(task, str):
                        yield key, raw, task

    def queued_task_ids(self, queues: Iterable[str]) -> set[str]:
        """Ids of the tasks waiting in ``queues`` (not yet delivered to a worker)."""
        return {task for _key, _raw, task in self._queued(queues)}

    def queued_in_order(self, queue: str) -> list[str]:
        """Ids of the tasks waiting in ``queue``, in the order a worker takes them (priority, then age)."""
        return self.queued_in_order_of([queue])

    def queued_in_order_of(self, queues: Iterable[str]) -> list[str]:
        """Ids of the tasks waiting in ``queues``, queue by queue, each in the order a worker takes them."""
        return [task for _key, _raw, task in self._queued(queues)]

    def remove_task(self, queue: str, task: str) -> int:
        """Take the waiting task ``task`` out of ``queue`` (every copy of it); how many were removed."""
        removed = 0
        for key, raw, queued in list(self._queued([queue])):
            if queued == task:
                removed += int(self.client.lrem(key, 0, raw))  # type: ignore[arg-type]  # redis-py takes bytes too
        return removed

    # -- job locks: held by the worker running the job, renewed by its heartbeat, expiring when it dies

    def acquire(self, job_id: str, owner: str, ttl_s: float) -> bool:
        return bool(self.client.set(LOCK_PREFIX + job_id, owner, nx=True, px=int(ttl_s * 1000)))

    def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        """Extend the lock; also takes it again when it vanished (Redis restarted without persistence).
        False: another worker holds it now."""
        return bool(self.client.eval(_RENEW, 1, LOCK_PREFIX + job_id, owner, int(ttl_s * 1000)))

    def release(self, job_id: str, owner: str) -> None:
        self.client.eval(_RELEASE, 1, LOCK_PREFIX + job_id, owner)

    @contextmanager
    def holding(self, job_id: str, owner: str, ttl_s: float) -> Iterator[bool]:
        """The job's lock for the block: yields False (and holds nothing) when another owner has it. Taking it
        raises BrokerError when Redis is away; a failed release is logged (the lock expires by itself)."""
        if not self.acquire(job_id, owner, ttl_s):
            yield False
            return
        try:
            yield True
        finally:
            try:
                self.release(job_id, owner)
            except BrokerError as exc:
                log.warning("job.unlock_failed", job_id=job_id, error=str(exc))

    def locked(self, job_id: str) -> bool:
        return bool(self.client.exists(LOCK_PREFIX + job_id))

    def extend_visibility(self, delivery_tag: str) -> None:
        """Mark a delivered task as delivered now, so Redis does not hand it to another worker while this one
        is alive (only if it is still unacknowledged)."""
        self.client.zadd(UNACKED_INDEX, {delivery_tag: time.time()}, xx=True)

    # -- the workers' heartbeat records (heygemd.farm.presence): one key per worker, gone when it stops beating

    def set_renderer(self, name: str, record: bytes, ttl_s: float) -> None:
        self.client.set(RENDERER_PREFIX + name, record, px=int(ttl_s * 1000))

    def drop_renderer(self, name: str) -> None:
        self.client.delete(RENDERER_PREFIX + name)

    def renderer_records(self) -> list[bytes]:
        """Every worker's record that has not expired."""
        keys = list(self.client.scan_iter(match=RENDERER_PREFIX + "*", count=100))
        values = self.client.mget(keys) if keys else []
        return [value for value in values if isinstance(value, bytes)]
