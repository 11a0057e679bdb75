"""The long-running process on one host: resume claimed jobs, watch the inbox, claim ready jobs, run them one at a
time (``heygemd run`` and ``heygemd once``). A farm's intake (:mod:`heygemd.farm.intake`) runs the same loop with
a step that publishes instead of rendering.

Signals only set flags (:mod:`heygemd.daemon.lifecycle`): the first SIGTERM (or Ctrl-C) stops taking jobs and
interrupts the current video at its next batch (it is redone on the next start); a second one stops at once.
Either way every claimed job stays recoverable: the next start resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import structlog

from heygemd.daemon.cancel import read_request
from heygemd.daemon.claims import ClaimedJob, claim, claimed_jobs, held_by, remove_stale_reservations, take_over
from heygemd.daemon.completeness import CompletenessCheck
from heygemd.daemon.lifecycle import (
    STOP_POLL_SECONDS,
    Heartbeat,
    Hooks,
    StopFlag,
    Stopping,
    until_stopped,
    warm_sessions,
)
from heygemd.daemon.outbox import empty_trash, prune_archive
from heygemd.daemon.readiness import Candidate, Readiness, ReadinessTracker, ReadyReason, scan_inbox
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.waiting import write_waiting
from heygemd.daemon.watching import InboxWatcher
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import ConfigError
from heygemd.fsutil import own_dir, own_subdirs, remove_temps
from heygemd.names import shown_name
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.service")

DEBOUNCE_SECONDS = 0.3
DEBOUNCE_MAX_SECONDS = 2.0
"""After an inbox event, wait until events pause for DEBOUNCE_SECONDS (at most DEBOUNCE_MAX_SECONDS) before
rescanning."""

PAUSED_RETRY_SECONDS = 300.0
"""A job that could not go on for a reason of the machine's (disk full, outbox unreachable) is tried again
after this long; meanwhile other jobs run."""


StepAction = Literal["ran", "idle"]


@dataclass(frozen=True)
class Step:
    """What one :meth:`Service.step` did: ran a job (its id and outcome), or found nothing to run (``wait_s``:
    how long until something may become ready by time alone, capped at the rescan interval)."""

    action: StepAction
    job_id: str | None = None
    outcome: JobOutcome | None = None
    wait_s: float = 0.0


RunJob = Callable[[ClaimedJob], JobOutcome]


class Service:
    """The service loop's decisions, one :meth:`step` at a time; time comes in as ``now`` (monotonic seconds).

    Policy of a step: first the oldest claimed job that no other live daemon holds and that is not waiting
    out a pause (at start these are what a previous process left; later, jobs paused on a full disk, retried
    ``paused_retry_s`` after the pause); else the earliest-arrived ready job in the inbox, claimed now. It runs
    to an outcome: paused jobs are retried later while other jobs go on; finished and failed ones are gone.
    ``run_job`` runs one claimed job (the worker, in production); ``clock`` (monotonic seconds) says when it
    ended, as a job can run for a long time after the ``now`` of its step.
    """

    def __init__(
        self,
        settings: Settings,
        run_job: RunJob,
        *,
        once: bool = False,
        paused_retry_s: float = PAUSED_RETRY_SECONDS,
        completeness: CompletenessCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        resume_claimed: bool = True,
        may_claim: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.run_job = run_job
        self.resume_claimed = resume_claimed  # False in a farm's intake: the workers resume claimed jobs
        self.may_claim = may_claim  # a farm's intake claims only while the broker can take the job
        self._clock = clock  # when a job ended (a pause is counted from then); decisions use step's ``now``
        self.paused_retry_s = float("inf") if once else paused_retry_s
        intake_settings = settings.intake
        self._now = 0.0
        self.tracker = ReadinessTracker(
            intake_settings.settle_seconds,
            ready_marker=intake_settings.ready_marker,
            completeness=completeness if completeness is not None else CompletenessCheck(),
            incomplete_timeout=intake_settings.incomplete_timeout,
            trust_file_times=once,  # a one-shot process has no history of the folders: their file times are it
            clock=lambda: self._now,
        )
        self.retry_at: dict[str, float] = {}
        self.waiting: dict[str, tuple[str, ...]] = {}
        """Per inbox job not yet ready: what it waits for (in-flight or incomplete files), for logs and STATUS=."""
        self._waiting_written: dict[str, tuple[str, ...]] | None = None
        self._refused: dict[str, str] = {}
        """Per inbox job whose claim was refused: the error last logged (logged again only when it changes)."""
        self._inbox_problem: str | None = None
        """The event last logged for an inbox that could not be scanned (None while it can)."""
        self._bad_names: set[str] = set()
        """Inbox folders whose names are not UTF-8, as of the last scan: each is logged when it first appears."""
        self._held: dict[str, str] = {}
        """Claimed jobs another live process holds, and why (each logged when it is first skipped)."""

    def step(self, now: float) -> Step:
        """Run the next job, if any (see the class docstring), and say what was done."""
        self._now = now
        claimed = (self._next_claimed(now) if self.resume_claimed else None) or (
            self._claim_next_ready() if self.may_claim() else None
        )
        self._publish_waiting()
        if claimed is None:
            deadlines = [d for d in (self.tracker.next_deadline(), self._next_retry(now)) if d is not None]
            # a deadline of 0.0 (settled just now) must not mean "no deadline"
            return Step("idle", wait_s=max(0.0, min([self.settings.intake.rescan_interval, *deadlines])))
        outcome = self.run_job(claimed)
        if outcome is JobOutcome.PAUSED:
            self.retry_at[claimed.job_id] = self._clock() + self.paused_retry_s
            log.warning("job.retry_later", job_id=claimed.job_id, after_s=self.paused_retry_s)
        elif outcome is not JobOutcome.INTERRUPTED:
            self.retry_at.pop(claimed.job_id, None)
        return Step("ran", job_id=claimed.job_id, outcome=outcome)

    def waiting_text(self) -> str:
        """One line on what the inbox's unready jobs wait for, e.g. for STATUS= ("" when none waits)."""
        parts = [f"{name}/{', '.join(files)}" for name, files in sorted(self.waiting.items()) if files]
        return "waiting for " + "; ".join(parts) if parts else ""

    def _publish_waiting(self) -> None:
        """Write ``waiting.json`` for ``heygemd status`` when what the inbox waits for changed."""
        current = {name: files for name, files in self.waiting.items() if files}
        if current == self._waiting_written:
            return
        try:
            write_waiting(self.settings.paths.state_dir, current)
        except OSError as exc:  # a share refusing one write: the log still says it, the next change retries
            log.warning("waiting.write_failed", error=f"{exc.filename}: {exc.strerror}")
            return
        except ConfigError as exc:  # the state folder became a link: never written through
            log.warning("waiting.write_failed", error=exc.message, hint=exc.hint)
            return
        self._waiting_written = current

    def _next_claimed(self, now: float) -> ClaimedJob | None:
        """The oldest claimed job that no other live daemon is working on and that is not waiting out a pause (a
        paused job with a cancel request does not wait: it is only finished as cancelled), now owned by this
        process."""
        claims = claimed_jobs(self.settings.paths.state_dir)
        for gone in set(self._held) - {c.job_id for c in claims}:
            del self._held[gone]
        for claimed in claims:
            pausing = self.retry_at.get(claimed.job_id, -float("inf")) > now and read_request(claimed.path) is None
            if pausing:
                continue
            holder = held_by(claimed)
            if holder is not None:
                if claimed.job_id not in self._held:
                    log.info("job.held_elsewhere", job_id=claimed.job_id, why=holder)
                self._held[claimed.job_id] = holder
                continue
            self._held.pop(claimed.job_id, None)
            log.info(
                "job.retrying" if claimed.job_id in self.retry_at else "job.resuming",
                job_id=claimed.job_id,
                previous_owner=f"{claimed.host}:{claimed.pid}",
            )
            return take_over(claimed)
        return None

    def _next_retry(self, now: float) -> float | None:
        """Seconds until the next paused job may be tried again, or None when none is paused."""
        pending = [t for t in self.retry_at.values() if t != float("inf")]
        return max(0.0, min(pending) - now) if pending else None

    def _claim_next_ready(self) -> ClaimedJob | None:
        """Scan the inbox, and claim the earliest-arrived ready job (None if none is ready).

        ``waiting`` remembers what each job was last seen waiting for, so the log says once (not at every scan)
        that a job waits, e.g. for a stale ``clip.mp4.part`` that someone must remove, or a presenter still at 0
        bytes.
        """
        paths = self.settings.paths
        bad_names: list[str] = []
        try:
            candidates = scan_inbox(paths.inbox, paths.state_dir, on_bad_name=bad_names.append)
        except OSError as exc:  # unmounted, stale or unreadable: said once, looked at again at the next scan
            event = "inbox.missing" if isinstance(exc, FileNotFoundError) else "inbox.unreadable"
            if self._inbox_problem != event:
                self._inbox_problem = event
                log.warning(event, inbox=str(paths.inbox), error=exc.strerror, hint="Is the share mounted?")
            return None
        self._inbox_problem = None
        for name in sorted(set(bad_names) - self._bad_names):
            log.warning(
                "inbox.bad_name",
                folder=shown_name(name),
                hint="The folder name is not valid UTF-8; rename it to take it as a job.",
            )
        self._bad_names = set(bad_names)
        self.tracker.retain(c.name for c in candidates)
        present = {c.name for c in candidates}
        for gone in set(self.waiting) - present:
            del self.waiting[gone]
        for gone in set(self._refused) - present:
            del self._refused[gone]
        ready = []
        for candidate in candidates:
            try:
                readiness = self.tracker.observe(candidate)
            except OSError as exc:  # unreadable or stale on the share: look again at the next scan
                log.warning("job.unreadable", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
                continue
            self._note_waiting(candidate.name, readiness)
            if readiness.ready:
                ready.append(candidate)
        for candidate in sorted(ready, key=_arrival):
            try:
                claimed = claim(candidate, paths.state_dir, outbox=paths.outbox)
            except OSError as exc:  # e.g. a client still holds a file open on the share (EACCES, EBUSY): retry later
                self._claim_refused(candidate.name, f"{exc.filename}: {exc.strerror}")
                continue
            except ConfigError as exc:  # claimed/ is a link (fsutil.own_dir): never followed; the admin removes it
                self._claim_refused(candidate.name, exc.message, hint=exc.hint)
                continue
            self._refused.pop(candidate.name, None)
            self.tracker.forget(candidate.name)
            self.waiting.pop(candidate.name, None)
            if claimed is not None:
                log.info("job.claimed", job_id=claimed.job_id, job_name=candidate.name)
                return claimed
        return None

    def _claim_refused(self, name: str, error: str, *, hint: str = "") -> None:
        """Log that ``name`` could not be claimed, once for as long as the same error repeats at every scan."""
        if self._refused.get(name) != error:
            self._refused[name] = error
            log.warning("job.claim_refused", job_name=name, error=error, **({"hint": hint} if hint else {}))

    def _note_waiting(self, name: str, readiness: Readiness) -> None:
        waiting_for = () if readiness.ready else readiness.waiting_for
        if waiting_for and self.waiting.get(name) != waiting_for:
            if readiness.in_flight:
                log.info(
                    "job.waiting",
                    job_name=name,
                    in_flight=", ".join(f"{name}/{f}" for f in readiness.in_flight),
                    hint="The job is taken once these files are complete (renamed or removed).",
                )
            else:
                incomplete = ", ".join(f"{name}/{f}" for f in readiness.incomplete)
                log.info(
                    "job.waiting",
                    job_name=name,
                    incomplete=incomplete,
                    hint="The job is taken once these files are completely uploaded, or after "
                    f"intake.incomplete_timeout ({self.settings.intake.incomplete_timeout:.0f} s) unchanged.",
                )
        if readiness.reason is ReadyReason.TIMED_OUT:
            log.warning(
                "job.incomplete_timeout",
                job_name=name,
                incomplete=", ".join(f"{name}/{f}" for f in readiness.incomplete),
                hint="Taken although these files look incomplete; they fail with their own errors.",
            )
        self.waiting[name] = waiting_for


def _arrival(candidate: Candidate) -> tuple[float, str]:
    try:
        return candidate.path.stat().st_mtime, candidate.name
    except FileNotFoundError:
        return float("inf"), candidate.name


def serve_inbox(settings: Settings, serve: Callable[[Stopping, Notifier], None]) -> int:
    """Run a process that serves the inbox (``heygemd run`` and ``once`` here, a farm's intake) until it is stopped:
    its folders made (a state folder that is a link is refused: heygemd writes only inside its own folders), the
    signals handled (:mod:`heygemd.daemon.lifecycle`). Returns the process exit status."""
    paths = settings.paths
    for folder in (paths.inbox, paths.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    own_dir(paths.state_dir)
    stop = StopFlag()
    stop.install()
    notifier = Notifier()

    def run() -> int:
        serve(Stopping(stop, notifier), notifier)
        return 0

    return until_stopped(run, notifier)


def run_service(settings: Settings, *, once: bool = False, hooks: Hooks = Hooks()) -> int:
    """``heygemd run`` (once=False) and ``heygemd once`` on a single host, with the ``hooks`` handed in from above.
    Returns the process exit status."""
    return serve_inbox(settings, partial(_serve, settings, once=once, hooks=hooks))


def _serve(settings: Settings, stopping: Stopping, notifier: Notifier, *, once: bool, hooks: Hooks) -> None:
    paths = settings.paths
    log.info(
        "daemon.starting",
        inbox=str(paths.inbox),
        outbox=str(paths.outbox),
        engine=settings.engine.name,
        mode="once" if once else "run",
    )
    sessions = warm_sessions(settings, hooks)

    with Heartbeat(notifier, watchdog_interval()) as heartbeat:
        context = JobContext.from_settings(
            settings,
            session_for=sessions.get,
            should_stop=stopping,
            heartbeat=heartbeat.beat,
            job_ended=hooks.job_ended,
            trouble=hooks.trouble,
        )

        def run_job(claimed: ClaimedJob) -> JobOutcome:
            heartbeat.beat(f"job {claimed.job_id}")
            outcome = process_job(claimed, paths.outbox, context).outcome
            sessions.after_job()
            heartbeat.beat(IDLE_TEXT)
            return outcome

        tidy_state(paths.state_dir)
        _remove_cache_temps(paths.cache_dir)
        service = Service(settings, run_job, once=once)
        if once:
            while not stopping() and service.step(time.monotonic()).action == "ran":
                pass
        else:
            watch_inbox(
                settings, service, stopping, notifier, heartbeat, idle_text=IDLE_TEXT, idle=sessions.unload_if_idle
            )


IDLE_TEXT = "idle, watching the inbox"


def tidy_state(state_dir: Path) -> None:
    """At start: what a killed process left in the state folder (reservations of claims cut short, deletes cut
    short, temporary files such as waiting.json's) goes."""
    remove_stale_reservations(state_dir)
    empty_trash(state_dir)
    remove_temps(state_dir, min_age_s=CACHE_TEMP_MIN_AGE_S)


def watch_inbox(
    settings: Settings,
    service: Service,
    stopping: Stopping,
    notifier: Notifier,
    heartbeat: Heartbeat,
    *,
    idle_text: str,
    idle: Callable[[], None] = lambda: None,
    each_round: Callable[[float], float] = lambda _now: float("inf"),
) -> None:
    """Step ``service`` until a stop is requested, waiting for the inbox to change between idle steps.

    Claimed jobs are resumed only after READY, as one can outlast systemd's start timeout. ``idle`` runs when a
    step found nothing to do (unload an idle engine); ``each_round(now)`` before every step, returning the seconds
    until it wants to run again (a farm's intake republishes lost tasks at each rescan).
    """
    paths, intake_settings = settings.paths, settings.intake
    watcher = InboxWatcher(
        paths.inbox,
        state_dir=paths.state_dir,
        observer=intake_settings.observer,
        poll_interval=intake_settings.poll_interval,
    )
    with watcher:
        log.info("daemon.ready", observer=watcher.kind, why=watcher.choice.reason if watcher.choice else "")
        notifier.ready(idle_text)
        while not stopping():
            heartbeat.beat()
            now = time.monotonic()
            due_in = each_round(now)
            step = service.step(now)
            if step.action == "ran":
                continue
            heartbeat.beat(service.waiting_text() or idle_text)
            idle()
            try:
                prune_archive(paths.state_dir, settings.outbox.archive_retention_days)
            except OSError as exc:  # a file held open on the share: pruning waits for a later round
                log.warning("archive.prune_failed", error=f"{exc.filename}: {exc.strerror}")
            wait = min(step.wait_s, max(0.0, now + due_in - time.monotonic()))
            wait_for_change(watcher, stopping, heartbeat, max(wait, 0.05))


def wait_for_change(watcher: InboxWatcher, stop: Callable[[], bool], heartbeat: Heartbeat, seconds: float) -> None:
    """Until the inbox changes, ``seconds`` pass, or a stop is requested (checked every STOP_POLL_SECONDS).

    A change is followed by a short quiet spell (``DEBOUNCE_SECONDS``, at most ``DEBOUNCE_MAX_SECONDS``): a copy
    makes thousands of events, and the caller rescans once for all of them. Waiting is alive and well: the
    watchdog keeps being fed, whatever ``intake.rescan_interval`` is.
    """
    end = time.monotonic() + seconds
    while not stop():
        heartbeat.beat()
        left = end - time.monotonic()
        if left <= 0:
            return
        if watcher.wait(min(left, STOP_POLL_SECONDS)):
            settle_until = time.monotonic() + DEBOUNCE_MAX_SECONDS
            while not stop() and time.monotonic() < settle_until and watcher.wait(DEBOUNCE_SECONDS):
                pass
            return


CACHE_TEMP_MIN_AGE_S = 3600.0
"""Temporary files in folders shared by daemons (face cache, state) younger than this may be another's, in use."""


def _remove_cache_temps(cache_dir: Path) -> None:
    """Temporary face-track files a killed heygemd left in the cache (and its sub-folders), once they are old. Links
    are never followed (``remove_temps`` and ``own_subdirs`` skip them)."""
    for folder in (cache_dir, *own_subdirs(cache_dir)):
        remove_temps(folder, min_age_s=CACHE_TEMP_MIN_AGE_S)
