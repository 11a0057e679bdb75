"""The long-running process: resume claimed jobs, watch the inbox, claim ready jobs, run them one at a time.

Signals only set flags: the first SIGTERM (or Ctrl-C) stops taking jobs and interrupts the current video at
its next batch (it is redone on the next start); a second one stops at once. Either way every claimed job
stays recoverable: the next start resumes it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog

from heygemd.daemon import intake
from heygemd.daemon.outbox import empty_trash, finish_inputs, prune_archive
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.worker import JobContext, process_job
from heygemd.errors import report_failure
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

    def __init__(self, notifier: Notifier, interval: float | None):
        self.notifier = notifier
        self.interval = interval
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
            if time.monotonic() - self._last_beat < self.interval:
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
        """Free accelerator memory; engines other than the default are unloaded."""
        self.default.release()
        for session in self._others.values():
            session.unload()
        self._others.clear()

    def unload_if_idle(self) -> None:
        idle = self.settings.engine.idle_unload_seconds
        if idle and self.default.loaded and time.monotonic() - self.last_used > idle:
            log.info("engine.unloaded", engine=self.default.engine_name, idle_s=round(idle))
            self.default.unload()


def run_service(settings: Settings, *, once: bool = False) -> int:
    """``heygemd run`` (once=False) and ``heygemd once``. Returns the process exit status."""
    paths = settings.paths
    for folder in (paths.inbox, paths.outbox, paths.state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    stop = StopFlag()
    stop.install()
    notifier = Notifier()
    try:
        _serve(settings, stop, notifier, once)
    except StopNow as exc:
        log.warning("daemon.stopped_now", signal=str(exc))
        notifier.stopping("stopped at once; the current job resumes on the next start")
        return 1
    notifier.stopping("stopped")
    log.info("daemon.stopped")
    return 0


def _serve(settings: Settings, stop: StopFlag, notifier: Notifier, once: bool) -> None:
    paths = settings.paths
    sessions = Sessions(settings)
    log.info("daemon.starting", inbox=str(paths.inbox), outbox=str(paths.outbox), engine=sessions.default.engine_name,
             mode="once" if once else "run")
    sessions.default.warm_up()

    with Heartbeat(notifier, watchdog_interval()) as heartbeat:
        context = JobContext(
            session_for=sessions.get,
            should_stop=stop.__bool__,
            heartbeat=heartbeat.beat,
            inputs_after=settings.outbox.inputs_after,
            naming=settings.outbox.naming,
            ready_marker=settings.intake.ready_marker,
        )

        def run_job(claimed: intake.ClaimedJob) -> None:
            heartbeat.beat(f"job {claimed.job_id}")
            try:
                process_job(claimed, paths.outbox, context)
            except OSError as exc:  # the outbox itself fails (full, share gone): the job stays claimed for later
                log.error("job.paused", job_id=claimed.job_id, error=f"{exc.filename or paths.outbox}: {exc.strerror}",
                          hint="Check the outbox's share and free space; the job is tried again later.")
            except Exception as exc:  # per-job boundary around the worker's own: never take the daemon down
                report_failure(log.bind(job_id=claimed.job_id), "job", exc)
                _set_aside(claimed)
            sessions.after_job()
            heartbeat.beat("idle, watching the inbox")

        intake.remove_stale_reservations(paths.state_dir)
        empty_trash(paths.state_dir)
        if once:
            _resume_claimed(settings, stop, run_job)
            _drain_ready(settings, stop, run_job)
        else:
            _watch(settings, stop, notifier, heartbeat, sessions, run_job)


def _watch(settings: Settings, stop: StopFlag, notifier: Notifier, heartbeat: Heartbeat, sessions: Sessions,
           run_job: Callable[[intake.ClaimedJob], None]) -> None:
    paths, intake_settings = settings.paths, settings.intake
    tracker = intake.ReadinessTracker(intake_settings.settle_seconds, ready_marker=intake_settings.ready_marker)
    watcher = intake.InboxWatcher(paths.inbox, state_dir=paths.state_dir, observer=intake_settings.observer,
                                  poll_interval=intake_settings.poll_interval)
    with watcher:
        log.info("daemon.ready", observer=watcher.kind, why=watcher.choice.reason if watcher.choice else "")
        notifier.ready("idle, watching the inbox")
        # Claimed jobs first, oldest first: at start they are what a previous process left (resumed only after
        # READY, as one can outlast systemd's start timeout); later, jobs paused on a full disk, after a backoff.
        retry_at: dict[str, float] = {}
        waiting: dict[str, tuple[str, ...]] = {}
        while not stop:
            heartbeat.beat()
            claimed = _next_claimed(paths.state_dir, retry_at, stop) or _claim_next_ready(settings, tracker, waiting)
            if claimed is not None:
                run_job(claimed)
                if not claimed.path.exists():  # finished: its inputs left claimed/
                    retry_at.pop(claimed.job_id, None)
                elif not stop:  # still claimed although not stopping: it paused
                    retry_at[claimed.job_id] = time.monotonic() + PAUSED_RETRY_SECONDS
                    log.warning("job.retry_later", job_id=claimed.job_id, after_s=PAUSED_RETRY_SECONDS)
                continue
            sessions.unload_if_idle()
            try:
                prune_archive(paths.state_dir, settings.outbox.archive_retention_days)
            except OSError as exc:  # a file held open on the share: pruning waits for a later round
                log.warning("archive.prune_failed", error=f"{exc.filename}: {exc.strerror}")
            deadlines = [d for d in (tracker.next_deadline(), _next_retry(retry_at)) if d is not None]
            # a deadline of 0.0 (settled just now) must not mean "no deadline"
            wait = min([intake_settings.rescan_interval, *deadlines])
            _wait_for_change(watcher, stop, heartbeat, max(wait, 0.05))
        log.info("daemon.stopping")


def _wait_for_change(watcher: intake.InboxWatcher, stop: StopFlag, heartbeat: Heartbeat, seconds: float) -> None:
    """Until the inbox changes, ``seconds`` pass, or a stop is requested (checked every STOP_POLL_SECONDS).

    A change is followed by a short quiet spell (``DEBOUNCE_SECONDS``, at most ``DEBOUNCE_MAX_SECONDS``): a copy
    makes thousands of events, and the caller rescans once for all of them. Waiting is alive and well: the
    watchdog keeps being fed, whatever ``intake.rescan_interval`` is.
    """
    end = time.monotonic() + seconds
    while not stop:
        heartbeat.beat()
        left = end - time.monotonic()
        if left <= 0:
            return
        if watcher.wait(min(left, STOP_POLL_SECONDS)):
            settle_until = time.monotonic() + DEBOUNCE_MAX_SECONDS
            while not stop and time.monotonic() < settle_until and watcher.wait(DEBOUNCE_SECONDS):
                pass
            return


def _next_claimed(state_dir: Path, retry_at: dict[str, float], stop: StopFlag) -> intake.ClaimedJob | None:
    """The oldest claimed job that no other live daemon is working on and that is not waiting out a pause,
    now owned by this process."""
    now = time.monotonic()
    for claimed in intake.claimed_jobs(state_dir):
        if stop:
            return None
        if retry_at.get(claimed.job_id, 0.0) > now or intake.held_elsewhere(claimed):
            continue
        log.info("job.retrying" if claimed.job_id in retry_at else "job.resuming", job_id=claimed.job_id,
                 previous_owner=f"{claimed.host}:{claimed.pid}")
        return intake.take_over(claimed)
    return None


def _next_retry(retry_at: dict[str, float]) -> float | None:
    """Seconds until the next paused job may be tried again, or None when none is paused."""
    if not retry_at:
        return None
    return max(0.0, min(retry_at.values()) - time.monotonic())


def _resume_claimed(settings: Settings, stop: StopFlag, run_job: Callable[[intake.ClaimedJob], None]) -> None:
    """Run the jobs a previous process claimed but did not finish, oldest claim first, each once."""
    tried: dict[str, float] = {}
    while (claimed := _next_claimed(settings.paths.state_dir, tried, stop)) is not None:
        tried[claimed.job_id] = float("inf")
        run_job(claimed)


def _set_aside(claimed: intake.ClaimedJob) -> None:
    """Archive the inputs of a job that failed outside the worker's own boundary, so it is not resumed forever."""
    try:
        finish_inputs(claimed, "archive")
    except OSError as exc:
        log.error("job.set_aside_failed", job_id=claimed.job_id, error=f"{exc.filename}: {exc.strerror}")


def _claim_next_ready(settings: Settings, tracker: intake.ReadinessTracker,
                      waiting: dict[str, tuple[str, ...]]) -> intake.ClaimedJob | None:
    """Scan the inbox, and claim the earliest-arrived ready job (None if none is ready).

    ``waiting`` remembers which in-flight files each job was last seen waiting for, so the log says once (not at
    every scan) that a job waits, e.g. for a stale ``clip.mp4.part`` that someone must remove.
    """
    paths = settings.paths
    try:
        candidates = intake.scan_inbox(paths.inbox, paths.state_dir)
    except FileNotFoundError:
        log.warning("inbox.missing", inbox=str(paths.inbox), hint="is the share mounted?")
        return None
    tracker.retain(c.name for c in candidates)
    for gone in set(waiting) - {c.name for c in candidates}:
        del waiting[gone]
    ready = []
    for candidate in candidates:
        try:
            readiness = tracker.observe(candidate)
            if readiness.in_flight and waiting.get(candidate.name) != readiness.in_flight:
                log.info("job.waiting", job_name=candidate.name, in_flight=", ".join(readiness.in_flight),
                         hint="The job is taken once these files are complete (renamed or removed).")
            waiting[candidate.name] = readiness.in_flight
            if readiness.ready:
                ready.append(candidate)
        except OSError as exc:  # unreadable or stale on the share: look again at the next scan
            log.warning("job.unreadable", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
    for candidate in sorted(ready, key=_arrival):
        try:
            claimed = intake.claim(candidate, paths.state_dir, outbox=paths.outbox)
        except OSError as exc:  # e.g. a client still holds a file open on the share (EACCES, EBUSY): retry later
            log.warning("job.claim_refused", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
            continue
        tracker.forget(candidate.name)
        if claimed is not None:
            log.info("job.claimed", job_id=claimed.job_id, job_name=candidate.name)
            return claimed
    return None


def _drain_ready(settings: Settings, stop: StopFlag, run_job: Callable[[intake.ClaimedJob], None]) -> None:
    """``heygemd once``: every job that is ready now: it has the marker, or nothing in it changed for
    settle_seconds. "Changed" reads each entry's ctime as well as its mtime: copies made with ``cp -p``,
    ``rsync -a``, Explorer or Finder keep old mtimes, but the ctime is when the file arrived."""
    paths, marker = settings.paths, settings.intake.ready_marker
    settle_ns = settings.intake.settle_seconds * 1e9
    refused: set[str] = set()
    while not stop:
        ready = []
        for candidate in intake.scan_inbox(paths.inbox, paths.state_dir):
            if candidate.name in refused:
                continue
            snap = intake.take_snapshot(candidate.path, marker)
            settled = snap.has_files and time.time_ns() - _last_change_ns(candidate.path) >= settle_ns
            if not snap.in_flight and snap.has_files and (snap.has_marker or settled):
                ready.append(candidate)
        if not ready:
            return
        candidate = sorted(ready, key=_arrival)[0]
        try:
            claimed = intake.claim(candidate, paths.state_dir, outbox=paths.outbox)
        except OSError as exc:  # e.g. a client holds a file open on the share: left for a later run
            log.warning("job.claim_refused", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
            refused.add(candidate.name)
            continue
        if claimed is not None:
            log.info("job.claimed", job_id=claimed.job_id, job_name=claimed.name)
            run_job(claimed)


def _last_change_ns(folder: Path) -> int:
    """The newest mtime or ctime of ``folder`` and everything in it."""
    newest = 0
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files, "."]:
            try:
                st = os.stat(os.path.join(root, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return newest


def _arrival(candidate: intake.Candidate) -> tuple[float, str]:
    try:
        return candidate.path.stat().st_mtime, candidate.name
    except FileNotFoundError:
        return float("inf"), candidate.name
