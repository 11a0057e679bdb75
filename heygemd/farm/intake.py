"""The farm's intake (``heygemd run`` with ``[queue] broker`` set; the CLI chooses it): watch, settle and claim as
the single host does (:mod:`heygemd.daemon.service`, the same loop), but publish each claimed job to the broker
instead of rendering it, and republish claimed jobs whose task was lost. While the broker is unreachable nothing
is claimed."""

from __future__ import annotations

from functools import partial

import structlog

from heygemd.daemon.claims import ClaimedJob, claimed_jobs
from heygemd.daemon.lifecycle import Heartbeat, Hooks, Stopping
from heygemd.daemon.service import Service, serve_inbox, tidy_state, watch_inbox
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.worker import JobOutcome
from heygemd.farm.publish import Publisher, PublishError
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.farm")

IDLE_TEXT = "intake: watching the inbox"


def run_intake(settings: Settings, *, hooks: Hooks = Hooks()) -> int:
    """``heygemd run`` in a farm, telling ``hooks.broker`` whether the broker answers at every look. Returns the
    process exit status."""
    return serve_inbox(settings, partial(_serve_intake, settings, hooks=hooks))


def _serve_intake(settings: Settings, stopping: Stopping, notifier: Notifier, *, hooks: Hooks) -> None:
    paths = settings.paths
    publisher = Publisher(settings, on_look=hooks.broker)
    log.info(
        "daemon.starting", inbox=str(paths.inbox), outbox=str(paths.outbox), mode="intake", broker=publisher.shown_url
    )

    def publish(claimed: ClaimedJob) -> JobOutcome:
        # not published: the job stays claimed, and the rescan below publishes it once the broker is back
        return JobOutcome.FINISHED if publisher.publish(claimed) else JobOutcome.INTERRUPTED

    rescan = _Rescan(settings, publisher)
    tidy_state(paths.state_dir)  # also deletes a killed worker left unfinished
    service = Service(settings, publish, resume_claimed=False, may_claim=publisher.reachable)
    with Heartbeat(notifier, watchdog_interval()) as heartbeat:
        watch_inbox(settings, service, stopping, notifier, heartbeat, idle_text=IDLE_TEXT, each_round=rescan)


class _Rescan:
    """Every ``intake.rescan_interval``: republish the claimed jobs whose task was lost (the workers resume claimed
    jobs; the intake only makes sure each has a task)."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.next_at = 0.0

    def __call__(self, now: float) -> float:
        """Rescan when due; the seconds until the next rescan."""
        if now >= self.next_at:
            self.next_at = now + self.settings.intake.rescan_interval
            try:
                if self.publisher.reachable():
                    self.publisher.republish_lost(claimed_jobs(self.settings.paths.state_dir))
            except PublishError as exc:  # the broker went away between the ping and the rescan
                log.warning("queue.rescan_failed", error=str(exc))
        return self.next_at - now
