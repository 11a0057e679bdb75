"""The worker's side of the farm: one task runs one claimed job through the daemon's own worker code
(:func:`heygemd.daemon.worker.process_job`: status.json, per-video isolation, resume of finished videos).

A job runs on one worker at a time: the worker takes the job's lock in Redis (renewed by a heartbeat thread,
with the claim's lease and the task's visibility) and checks claim.json names no other live owner. A duplicate
task (published twice, or restored by Redis while the job was done elsewhere) finds the job gone or locked and
is dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from heygemd.daemon.claims import ClaimedJob, read_claim, renew_lease, take_over
from heygemd.daemon.hooks import JobEnded, TroubleSeen, no_job_ended, no_trouble
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.farm.broker import Broker, BrokerError
from heygemd.farm.ownership import MISSED_HEARTBEATS, disown, owned_elsewhere
from heygemd.farm.periodic import Periodic
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")


def map_path(path: str, path_map: dict[str, str]) -> Path:
    """``path`` as the intake published it, on this host: the longest matching prefix of ``path_map`` replaced."""
    pure = Path(path)
    for prefix in sorted(path_map, key=len, reverse=True):
        try:
            rest = pure.relative_to(prefix)
        except ValueError:
            continue
        return Path(path_map[prefix]) / rest
    return pure


@dataclass(frozen=True)
class TaskResult:
    """What one task did: ``ran`` (with the job's outcome), ``gone`` (finished already) or ``duplicate``."""

    action: str
    outcome: JobOutcome | None = None


class _Beats(Periodic):
    """While a job runs: renew its lock, its claim lease and its task's visibility every ``interval`` s, and call
    ``also`` (the worker's presence in Celery's events)."""

    def __init__(
        self,
        broker: Broker,
        claimed: ClaimedJob,
        owner: str,
        interval: float,
        delivery_tag: str | None,
        also: Callable[[], None],
    ) -> None:
        super().__init__(interval, "heygemd-job-heartbeat")
        self.broker, self.claimed, self.owner = broker, claimed, owner
        self.delivery_tag = delivery_tag
        self.also = also
        self._broker_ok = True

    def tick(self) -> None:
        self.also()
        try:
            renew_lease(self.claimed)
        except OSError as exc:  # the share refusing one touch: status writes renew it too
            log.warning("job.lease_renew_failed", job_id=self.claimed.job_id, error=exc.strerror or str(exc))
        try:
            if not self.broker.renew(self.claimed.job_id, self.owner, self.interval * MISSED_HEARTBEATS):
                log.error(
                    "job.lock_lost",
                    job_id=self.claimed.job_id,
                    hint="Another worker holds this job's lock; it stands back while claim.json names this worker.",
                )
            if self.delivery_tag:
                self.broker.extend_visibility(self.delivery_tag)
        except BrokerError as exc:  # Redis away: the job goes on, the lock is taken again when it is back
            if self._broker_ok:
                log.warning("queue.heartbeat_failed", job_id=self.claimed.job_id, error=str(exc))
            self._broker_ok = False
        else:
            self._broker_ok = True


class JobRunner:
    """Runs the tasks of one worker process: its warm engines, its stop flag, its name in status.json."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        *,
        should_stop: Callable[[], bool],
        worker: str,
        device: str,
        heartbeat: Callable[[str], None] = lambda _text: None,
        during_job: Callable[[], None] = lambda: None,
        job_ended: JobEnded = no_job_ended,
        trouble: TroubleSeen = no_trouble,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.broker = Broker(settings.queue.broker)
        self.owner = f"{worker} {socket.gethostname()}:{os.getpid()}"
        self.heartbeat = heartbeat
        self.during_job = during_job
        """Called when a job starts and at every heartbeat while it runs (from the heartbeat thread)."""
        self.busy = False
        """True while a task runs (the systemd watchdog then needs the job's progress beats)."""
        self.context = JobContext.from_settings(
            settings,
            session_for=sessions.get,
            should_stop=should_stop,
            heartbeat=heartbeat,
            worker=worker,
            device=device,
            job_ended=job_ended,
            trouble=trouble,
        )

    def run(self, job_id: str, claim_path: str, delivery_tag: str | None = None) -> TaskResult:
        self.heartbeat(f"job {job_id}")
        self.busy = True
        try:
            return self._run(job_id, claim_path, delivery_tag)
        finally:
            self.busy = False
            self.heartbeat(f"{self.context.worker}: idle")

    def _run(self, job_id: str, claim_path: str, delivery_tag: str | None) -> TaskResult:
        path = map_path(claim_path, self.settings.queue.path_map)
        ttl = self.settings.queue.heartbeat_interval * MISSED_HEARTBEATS
        with self.broker.holding(job_id, self.owner, ttl) as held:
            if not held:
                log.info("job.duplicate_task", job_id=job_id, why="another worker holds the job")
                return TaskResult("duplicate")
            claimed = read_claim(path)
            if claimed is None:
                log.info("job.duplicate_task", job_id=job_id, why="the job is finished", claim=str(path))
                return TaskResult("gone")
            if owned_elsewhere(claimed, self.settings.queue):
                log.info("job.duplicate_task", job_id=job_id, why=f"{claimed.host}:{claimed.pid} runs it")
                return TaskResult("duplicate")
            claimed = take_over(claimed)
            log.info("job.taken", job_id=job_id, worker=self.context.worker)
            self.during_job()
            interval = self.settings.queue.heartbeat_interval
            with _Beats(self.broker, claimed, self.owner, interval, delivery_tag, self.during_job):
                outcome = self._process(claimed)
            if outcome in (JobOutcome.PAUSED, JobOutcome.INTERRUPTED):
                disown(claimed)  # still claimed: free for the next task of the job (requeued or republished)
            return TaskResult("ran", outcome)

    def _process(self, claimed: ClaimedJob) -> JobOutcome:
        outcome = process_job(claimed, self.settings.paths.outbox, self.context).outcome
        self.sessions.after_job()
        return outcome
