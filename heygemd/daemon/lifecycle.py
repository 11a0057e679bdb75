"""What every long-running heygemd process shares, whatever loop it runs (``heygemd run``, ``once``, the farm's
intake and ``heygemd worker``): the stop flag and its one second-signal rule, the systemd heartbeat, the warm
engines, and the hooks handed in from above (:class:`Hooks`).

Signals only set flags. The first SIGTERM (or Ctrl-C) stops taking work and interrupts the current video at its
next batch; the loop ends, its job stays claimed with the video pending, and the process exits 0. A second one
stops now: :class:`StopNow` unwinds whatever runs (ffmpeg is stopped, partial outputs removed, the claim kept) and
the process exits 1. Either way the next start (or, in a farm, the next worker) resumes the job.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import structlog

from heygemd.daemon.hooks import JobEnded, TroubleSeen, no_job_ended, no_trouble, tell_trouble
from heygemd.daemon.systemd import Notifier
from heygemd.errors import ErrorInfo
from heygemd.lipsync import LipSyncSession
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.service")

STOP_POLL_SECONDS = 0.5
"""Longest a wait goes without looking at the stop flag."""


class StopNow(BaseException):
    """Raised by the second stop signal: leave whatever is running (the claimed job resumes on the next start)."""


class StopFlag:
    """Set by the first stop signal; the second one raises :class:`StopNow` in the main thread.

    The handler touches nothing but this flag: setting another thread's Event from a signal handler can
    deadlock when the main thread holds that Event's lock. Waits poll the flag instead (``STOP_POLL_SECONDS``).
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def __call__(self) -> bool:
        return self.event.is_set()

    def request(self, signal_name: str) -> None:
        """A stop signal arrived (called from a signal handler, in the main thread): the first sets the flag, the
        second raises :class:`StopNow`."""
        if self.event.is_set():
            raise StopNow(signal_name)
        self.event.set()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (a process whose signals nobody else handles; a Celery worker calls
        :meth:`request` from its own handler)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)


class Stopping:
    """``should_stop`` for a loop and its jobs: the stop flag, announcing ``STOPPING=1`` the first time it is
    seen set (the signal handler itself only sets the flag)."""

    def __init__(self, stop: StopFlag, notifier: Notifier, *, event: str = "daemon.stopping") -> None:
        self._stop = stop
        self._notifier = notifier
        self._event = event
        self._announced = False

    def __call__(self) -> bool:
        if self._stop and not self._announced:
            self._announced = True
            self._notifier.stopping("stopping: the current video is redone on the next start")
            log.info(self._event)
        return bool(self._stop)


def until_stopped(serve: Callable[[], int], notifier: Notifier, *, name: str = "daemon") -> int:
    """Run ``serve`` (a loop that returns its exit status once the stop flag is set) and return the process's exit
    status: ``serve``'s after the first stop signal, 1 after a second one (:class:`StopNow`)."""
    try:
        status = serve()
    except StopNow as exc:
        log.warning(f"{name}.stopped_now", signal=str(exc))
        notifier.stopping("stopped at once; the current job resumes on the next start")
        return 1
    notifier.stopping("stopped")
    log.info(f"{name}.stopped")
    return status


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


def _ignore(*_args: object) -> None:
    pass


@dataclass(frozen=True)
class Hooks:
    """What a process is told to do besides its loop, handed in from above (the CLI: the notify package's callbacks
    and alerts, the metrics); the defaults do nothing."""

    job_ended: JobEnded = no_job_ended
    """A job ended (:mod:`heygemd.daemon.hooks`)."""
    trouble: TroubleSeen = no_trouble
    """The machine is in trouble: a full disk pauses a job, the engine fails to load, the broker stays away."""
    broker: Callable[[str | None, float], None] = _ignore
    """A farm's intake, at every look at the broker: what is wrong with it (None: it answered), and when (monotonic
    seconds)."""
    sessions: Callable[[Sessions], None] = _ignore
    """The process's warm engines, once made (the metrics watch them)."""


def warm_sessions(settings: Settings, hooks: Hooks) -> Sessions:
    """The process's warm engines with the configured engine loaded, told to ``hooks.sessions`` first. An engine
    that fails to load is told to ``hooks.trouble`` and raised (the process stops: it cannot render)."""
    try:
        sessions = Sessions(settings)
        hooks.sessions(sessions)
        log.info("engine.warming_up", engine=sessions.default.engine_name, device=settings.engine.device)
        sessions.default.warm_up()
    except Exception as exc:  # told, then raised as it is
        info = ErrorInfo.from_exception(exc)
        detail = f"engine {settings.engine.name} on {settings.engine.device}: [{info.code}] {info.message} {info.hint}"
        tell_trouble(hooks.trouble, "engine_failed", detail.strip())
        raise
    return sessions
