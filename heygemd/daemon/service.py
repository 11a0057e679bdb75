"""The long-running process: resume claimed jobs, watch the inbox, claim ready jobs, run them one at a time.

Signals only set flags: the first SIGTERM (or Ctrl-C) stops taking jobs and interrupts the current video at
its next batch (it is redone on the next start); a second one stops at once. Either way every claimed job
stays recoverable: the next start resumes it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

import structlog

from heygemd.daemon.cancel import read_request
from heygemd.daemon.claims import ClaimedJob, claim, claimed_jobs, held_elsewhere, remove_stale_reservations, take_over
from heygemd.daemon.completeness import CompletenessCheck
from heygemd.daemon.outbox import empty_trash, finish_inputs, prune_archive
from heygemd.daemon.readiness import Candidate, Readiness, ReadinessTracker, ReadyReason, scan_inbox
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.waiting import write_waiting
from heygemd.daemon.watching import InboxWatcher
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import report_failure
from heygemd.fsutil import remove_temps
from heygemd.lipsync import LipSyncSession
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.service")

STOP_POLL_SECONDS = 0.5
"""Longest a wait goes without looking at the stop flag."""

DEBOUNCE_SECONDS = 0.3
DEBOUNCE_MAX_SECONDS = 2.0
"""After an inbox event, wait until events pause for DEBOUNCE_SECONDS (at most DEBOUNCE_MAX_SECONDS) before
rescanning."""

PAUSED_RETRY_SECONDS = 300.0
"""A job that could not go on for a reason of the machine's (disk full, outbox unreachable) is tried again
after this long; meanwhile other jobs run."""


class StopNow(BaseException):
    """Raised by the second stop signal: leave whatever is running (the claimed job resumes on restart)."""


class StopFlag:
    """Set by the first SIGTERM/SIGINT; the second one raises StopNow in the main thread.

    The handler touches nothing but this flag: setting another thread's Event from a signal handler can
    deadlock when the main thread holds that Event's lock. Waits poll the flag instead (``STOP_POLL_SECONDS``).
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def __call__(self) -> bool:
        return self.event.is_set()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            raise StopNow(signal.Signals(signum).name)
        self.event.set()


class Heartbeat:
    """Pings the systemd watchdog from a thread, but only while the work loop keeps reporting progress.

    A wedged GPU call or a hung ffmpeg stops the beats, the pings stop, and systemd restarts the service.
    """

    def __init__(self, notifier: Notifier, interval: float | None, *, idle: Callable[[], bool] = lambda: False):
        """``idle``: True while no work runs (a farm worker waiting for a task): the pings go on without beats."""
        self.notifier = notifier
        self.interval = interval
        self.idle = idle
        self._last_beat = time.monotonic()
        self._last_text = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, text: str = "") -> None:
        self._last_beat = time.monotonic()
        if text and text != self._last_text:
            self._last_text = text
            self.notifier.status(text)

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="heygemd-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval / 2):
            if self.idle() or time.monotonic() - self._last_beat < self.interval:
                self.notifier.watchdog()


class Sessions:
    """The warm engines: the configured one, plus any a job.toml asks for (loaded on demand)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.default = LipSyncSession(settings)
        self._others: dict[str, LipSyncSession] = {}
        self.last_used = time.monotonic()

    def get(self, engine: str | None) -> LipSyncSession:
        self.last_used = time.monotonic()
        if engine in (None, "auto") or engine == self.default.engine_name:
            return self.default
        if engine not in self._others:
            self._others[engine] = LipSyncSession(self.settings, engine)
        return self._others[engine]

    def after_job(self) -> None:
        """Free accelerator memory; engines other than the default are unloaded. The idle time counts from here,
        so a job longer than ``engine.idle_unload_seconds`` does not unload the engine the moment it ends."""
        self.last_used = time.monotonic()
        self.default.release()
        for session in self._others.values():
            session.unload()
        self._others.clear()

    def unload_if_idle(self) -> None:
        idle = self.settings.engine.idle_unload_seconds
        if idle and self.default.loaded and time.monotonic() - self.last_used > idle:
            log.info("engine.unloaded", engine=self.default.engine_name, idle_s=round(idle))
            self.default.unload()


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
        self._waiting_written = current

    def _next_claimed(self, now: float) -> ClaimedJob | None:
        """The oldest claimed job that no other live daemon is working on and that is not waiting out a pause (a
        paused job with a cancel request does not wait: it is only finished as cancelled), now owned by this
        process."""
        for claimed in claimed_jobs(self.settings.paths.state_dir):
            pausing = self.retry_at.get(claimed.job_id, -float("inf")) > now and read_request(claimed.path) is None
            if pausing or held_elsewhere(claimed):
                continue
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
        try:
            candidates = scan_inbox(paths.inbox, paths.state_dir)
        except FileNotFoundError:
            log.warning("inbox.missing", inbox=str(paths.inbox), hint="is the share mounted?")
            return None
        self.tracker.retain(c.name for c in candidates)
        for gone in set(self.waiting) - {c.name for c in candidates}:
            del self.waiting[gone]
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
                log.warning("job.claim_refused", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
                continue
            self.tracker.forget(candidate.name)
            self.waiting.pop(candidate.name, None)
            if claimed is not None:
                log.info("job.claimed", job_id=claimed.job_id, job_name=candidate.name)
                return claimed
        return None

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


def run_service(settings: Settings, *, once: bool = False) -> int:
    """``heygemd run`` (once=False) and ``heygemd once``. Returns the process exit status."""
    paths = settings.paths
    for folder in (paths.inbox, paths.outbox, paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    stop = StopFlag()
    stop.install()
    notifier = Notifier()
    try:
        if settings.queue.broker and not once:
            _serve_intake(settings, stop, notifier)
        else:
            _serve(settings, stop, notifier, once)
    except StopNow as exc:
        log.warning("daemon.stopped_now", signal=str(exc))
        notifier.stopping("stopped at once; the current job resumes on the next start")
        return 1
    notifier.stopping("stopped")
    log.info("daemon.stopped")
    return 0


class _Stopping:
    """``should_stop`` for the loop and the worker: the stop flag, announcing ``STOPPING=1`` the first time it is
    seen set (the signal handler itself only sets the flag)."""

    def __init__(self, stop: StopFlag, notifier: Notifier) -> None:
        self._stop = stop
        self._notifier = notifier
        self._announced = False

    def __call__(self) -> bool:
        if self._stop and not self._announced:
            self._announced = True
            self._notifier.stopping("stopping: the current video is redone on the next start")
            log.info("daemon.stopping")
        return bool(self._stop)


def _serve(settings: Settings, stop: StopFlag, notifier: Notifier, once: bool) -> None:
    paths = settings.paths
    sessions = Sessions(settings)
    log.info(
        "daemon.starting",
        inbox=str(paths.inbox),
        outbox=str(paths.outbox),
        engine=sessions.default.engine_name,
        mode="once" if once else "run",
    )
    sessions.default.warm_up()
    stopping = _Stopping(stop, notifier)

    with Heartbeat(notifier, watchdog_interval()) as heartbeat:
        context = JobContext(
            session_for=sessions.get,
            should_stop=stopping,
            heartbeat=heartbeat.beat,
            inputs_after=settings.outbox.inputs_after,
            naming=settings.outbox.naming,
            ready_marker=settings.intake.ready_marker,
            max_job_toml_bytes=settings.intake.max_job_toml_bytes,
            quality=settings.quality,
        )

        def run_job(claimed: ClaimedJob) -> JobOutcome:
            heartbeat.beat(f"job {claimed.job_id}")
            try:
                outcome = process_job(claimed, paths.outbox, context).outcome
            except Exception as exc:  # per-job boundary around the worker's own: never take the daemon down
                report_failure(log.bind(job_id=claimed.job_id), "job", exc)
                _set_aside(claimed)
                outcome = JobOutcome.FAILED
            sessions.after_job()
            heartbeat.beat("idle, watching the inbox")
            return outcome

        remove_stale_reservations(paths.state_dir)
        empty_trash(paths.state_dir)
        _remove_cache_temps(paths.cache_dir)
        remove_temps(paths.state_dir, min_age_s=CACHE_TEMP_MIN_AGE_S)  # waiting.json's, from a killed process
        service = Service(settings, run_job, once=once)
        if once:
            while not stopping() and service.step(time.monotonic()).action == "ran":
                pass
        else:
            _watch(settings, service, stopping, notifier, heartbeat, sessions)


def _watch(
    settings: Settings,
    service: Service,
    stopping: _Stopping,
    notifier: Notifier,
    heartbeat: Heartbeat,
    sessions: Sessions,
) -> None:
    paths, intake_settings = settings.paths, settings.intake
    watcher = InboxWatcher(
        paths.inbox,
        state_dir=paths.state_dir,
        observer=intake_settings.observer,
        poll_interval=intake_settings.poll_interval,
    )
    with watcher:
        log.info("daemon.ready", observer=watcher.kind, why=watcher.choice.reason if watcher.choice else "")
        notifier.ready("idle, watching the inbox")
        # Claimed jobs are resumed only after READY, as one can outlast systemd's start timeout.
        while not stopping():
            heartbeat.beat()
            step = service.step(time.monotonic())
            if step.action == "ran":
                continue
            heartbeat.beat(service.waiting_text() or "idle, watching the inbox")
            sessions.unload_if_idle()
            try:
                prune_archive(paths.state_dir, settings.outbox.archive_retention_days)
            except OSError as exc:  # a file held open on the share: pruning waits for a later round
                log.warning("archive.prune_failed", error=f"{exc.filename}: {exc.strerror}")
            _wait_for_change(watcher, stopping, heartbeat, max(step.wait_s, 0.05))


def _serve_intake(settings: Settings, stop: StopFlag, notifier: Notifier) -> None:
    """The farm's intake (``[queue] broker`` set): watch, settle and claim as :func:`_serve` does, but publish
    each claimed job to the broker instead of rendering it; republish claimed jobs whose task was lost. While
    the broker is unreachable nothing is claimed."""
    from heygemd.queue.publish import Publisher, PublishError  # Celery and Redis: only in a farm

    paths, intake_settings = settings.paths, settings.intake
    publisher = Publisher(settings)
    stopping = _Stopping(stop, notifier)
    log.info(
        "daemon.starting", inbox=str(paths.inbox), outbox=str(paths.outbox), mode="intake", broker=publisher.shown_url
    )

    def publish(claimed: ClaimedJob) -> JobOutcome:
        # not published: the job stays claimed, and the rescan below publishes it once the broker is back
        return JobOutcome.FINISHED if publisher.publish(claimed) else JobOutcome.INTERRUPTED

    remove_stale_reservations(paths.state_dir)
    empty_trash(paths.state_dir)  # deletes a killed worker left unfinished
    remove_temps(paths.state_dir, min_age_s=CACHE_TEMP_MIN_AGE_S)
    service = Service(settings, publish, resume_claimed=False, may_claim=publisher.reachable)
    watcher = InboxWatcher(
        paths.inbox,
        state_dir=paths.state_dir,
        observer=intake_settings.observer,
        poll_interval=intake_settings.poll_interval,
    )
    with Heartbeat(notifier, watchdog_interval()) as heartbeat, watcher:
        log.info("daemon.ready", observer=watcher.kind, why=watcher.choice.reason if watcher.choice else "")
        notifier.ready("intake: watching the inbox")
        next_rescan = 0.0
        while not stopping():
            heartbeat.beat()
            now = time.monotonic()
            if now >= next_rescan:
                next_rescan = now + intake_settings.rescan_interval
                try:
                    if publisher.reachable():
                        publisher.republish_lost(claimed_jobs(paths.state_dir))
                except PublishError as exc:  # the broker went away between the ping and the rescan
                    log.warning("queue.rescan_failed", error=str(exc))
            step = service.step(now)
            if step.action == "ran":
                continue
            heartbeat.beat(service.waiting_text() or "intake: watching the inbox")
            try:
                prune_archive(paths.state_dir, settings.outbox.archive_retention_days)
            except OSError as exc:  # a file held open on the share: pruning waits for a later round
                log.warning("archive.prune_failed", error=f"{exc.filename}: {exc.strerror}")
            wait = min(step.wait_s, max(0.0, next_rescan - time.monotonic()))
            _wait_for_change(watcher, stopping, heartbeat, max(wait, 0.05))


def _wait_for_change(watcher: InboxWatcher, stop: Callable[[], bool], heartbeat: Heartbeat, seconds: float) -> None:
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


def _set_aside(claimed: ClaimedJob) -> None:
    """Archive the inputs of a job that failed outside the worker's own boundary, so it is not resumed forever."""
    try:
        finish_inputs(claimed, "archive")
    except OSError as exc:
        log.error("job.set_aside_failed", job_id=claimed.job_id, error=f"{exc.filename}: {exc.strerror}")


CACHE_TEMP_MIN_AGE_S = 3600.0
"""Temporary files in folders shared by daemons (face cache, state) younger than this may be another's, in use."""


def _remove_cache_temps(cache_dir: Path) -> None:
    """Temporary face-track files a killed heygemd left in the cache (and its sub-folders), once they are old."""
    folders = (
        [cache_dir, *(p for p in cache_dir.iterdir() if p.is_dir() and not p.is_symlink())]
        if cache_dir.is_dir()
        else []
    )
    for folder in folders:
        remove_temps(folder, min_age_s=CACHE_TEMP_MIN_AGE_S)
