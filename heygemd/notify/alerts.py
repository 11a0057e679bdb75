"""Telling people, through Apprise, on the channels of ``[notify] urls`` (Slack, Teams, e-mail, ntfy, Discord,
Telegram, a JSON webhook, ...): one short message when a job ends (``job.finished``, ``job.failed``) and when the
server is in trouble (``server.trouble``: a full disk, an engine that fails to load, the broker unreachable for more
than a minute), for the ``[notify] events`` chosen.

Messages are sent by a thread of their own from a bounded queue, so nothing waits for them. A message that cannot
be sent is logged and dropped (Apprise makes one attempt per channel), as is one that finds the queue full; the
same trouble is told at most once every REPEAT_S.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import apprise
import structlog

from heygemd.daemon.hooks import Trouble
from heygemd.daemon.status import JobStatus
from heygemd.errors import ConfigError
from heygemd.settings import NotifyEvent, NotifySettings

log = structlog.get_logger("heygemd.notify")

QUEUE_SIZE = 64
"""Messages waiting to be sent; one more is dropped (and logged)."""
REPEAT_S = 3600.0
"""The same kind of trouble is told at most once in this many seconds (a full disk is met again every few minutes)."""
STOP_WAIT_S = 30.0
"""How long ``stop`` waits for the messages already queued (each channel has its own connect and read timeouts)."""
BROKER_GRACE_S = 60.0
"""The broker is told about once it has been unreachable for this long (:class:`Outage`)."""

TROUBLE_TITLES: dict[Trouble, str] = {
    "disk_full": "disk full",
    "engine_failed": "an engine failed to load",
    "broker_unreachable": "the broker is unreachable",
}
KIND_OF_STATE = {"done": "success", "partial": "warning", "failed": "failure", "cancelled": "info"}
"""Apprise's message types (colours and icons on most channels) by the job's end state."""


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str = "info"


def job_event(status: JobStatus) -> NotifyEvent:
    """``job.failed`` for a job that ended failed or partial, else ``job.finished``."""
    return "job.failed" if status.state in ("failed", "partial") else "job.finished"


def wants_job(events: tuple[NotifyEvent, ...], status: JobStatus) -> bool:
    """Whether ``events`` asks to hear of this job's end: job.finished hears of every end, job.failed of failed and
    partial ones."""
    return "job.finished" in events or job_event(status) in events


def first_error(status: JobStatus) -> str | None:
    """The job's own error, else the first failed video's, as ``CODE: message``."""
    errors = [status.error] + [v.error for v in status.videos if v.state == "failed"]
    found = next((e for e in errors if e is not None), None)
    return None if found is None else f"{found.code}: {found.message}"


def job_message(status: JobStatus, public_url: str) -> Message:
    """The message about a job that ended: its name and state, the videos done and failed, the first error, and a
    link to its page when ``public_url`` (``web.public_url``) is set."""
    done, failed, total = status.counts()
    lines = [f"{done} of {total} videos done" + (f", {failed} failed" if failed else "") + "."]
    if status.videos_to_review:
        lines.append(f"{status.videos_to_review} to review: the quality check flagged them (see the job's page).")
    if error := first_error(status):
        lines.append(f"First error: {error}")
    if public_url:
        lines.append(f"{public_url}/jobs/{quote(status.job_id, safe='')}")
    return Message(f"{status.job_name}: {status.state}", "\n".join(lines), KIND_OF_STATE.get(status.state, "info"))


def trouble_message(kind: Trouble, detail: str, host: str) -> Message:
    return Message(f"heygemd on {host}: {TROUBLE_TITLES[kind]}", detail, "failure")


def _scheme(url: str) -> str:
    """The scheme of an Apprise URL, to name it without its tokens."""
    scheme, found, _ = url.partition("://")
    return scheme[:20] if found and scheme.isalnum() else "(no scheme)"


class Alerts:
    """The messages for people of ``notify`` (nothing is sent when ``notify.urls`` is empty).

    ``job_ended`` and ``trouble`` only queue a message (False when it is not wanted or the queue is full);
    ``start`` runs the thread that sends them (``send`` sends one now, for tests and the thread).
    """

    def __init__(
        self,
        notify: NotifySettings,
        *,
        public_url: str,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = QUEUE_SIZE,
        on_sent: Callable[[bool], None] | None = None,
    ) -> None:
        self.events = notify.events
        self.on_sent = on_sent
        """Told after every message whether it was sent (the metrics count them)."""
        self.public_url = public_url
        self.clock = clock
        self.host = socket.gethostname()
        self._apprise = apprise.Apprise()
        for i, url in enumerate(notify.urls):
            if not self._apprise.add(url.get_secret_value()):
                raise ConfigError(
                    f"invalid setting: notify.urls[{i}] (scheme {_scheme(url.get_secret_value())}) is not an Apprise "
                    "URL this heygemd can send to",
                    hint="Check the URL against https://github.com/caronc/apprise/wiki (the scheme, its tokens).",
                )
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=queue_size)
        self._told: dict[Trouble, float] = {}
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return len(self._apprise) > 0

    def job_ended(self, status: JobStatus) -> bool:
        """Queue the message about a job that ended, when the events ask for it."""
        if not wants_job(self.events, status):
            return False
        return self._put(job_message(status, self.public_url))

    def trouble(self, kind: Trouble, detail: str) -> bool:
        """Queue a message about the server's trouble (``detail``: what happened and what to do), unless the events
        leave it out or the same kind was told less than REPEAT_S ago."""
        if "server.trouble" not in self.events:
            return False
        now = self.clock()
        last = self._told.get(kind)
        if last is not None and now - last < REPEAT_S:
            return False
        self._told[kind] = now
        return self._put(trouble_message(kind, detail, self.host))

    def _put(self, message: Message) -> bool:
        if not self.enabled:
            return False
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.warning("notify.alert_dropped", title=message.title, reason="the queue of messages is full")
            return False
        return True

    def send(self, message: Message) -> bool:
        """Send ``message`` on every channel now; a failure is logged (with the channels' own words), not raised."""
        result = self._apprise.notify(body=message.body, title=message.title, notify_type=message.kind)
        if not result:
            log.warning("notify.alert_failed", title=message.title)
        if self.on_sent is not None:
            self.on_sent(bool(result))
        return bool(result)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heygemd-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop the thread once the messages already queued are sent (waiting ``timeout`` seconds at most)."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("notify.alerts_not_stopped", reason=f"messages still queued after {timeout:g} s")
            return
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self.send(message)
            except Exception:  # the thread's boundary: one channel's crash must not silence the next messages
                log.exception("notify.alert_crashed", title=message.title)


class Outage:
    """Whether an outage has lasted long enough to tell people: :meth:`update` answers True once per outage, the
    first time it is told the thing is still down ``after_s`` seconds after it was first told so."""

    def __init__(self, after_s: float = BROKER_GRACE_S) -> None:
        self.after_s = after_s
        self._since: float | None = None
        self._told = False

    def update(self, up: bool, now: float) -> bool:
        if up:
            self._since, self._told = None, False
            return False
        if self._since is None:
            self._since = now
        if self._told or now - self._since < self.after_s:
            return False
        self._told = True
        return True
