"""Everything a heygemd process tells others, in one object whose methods are the daemon's hooks
(:mod:`heygemd.daemon.hooks`; the CLI hands them in):

- :meth:`Notices.job_ended`: the job's signed callback (its ``callback_url``) is queued in the state folder, its
  body the job's final status document, and each of its records (queued, every attempt) is written into the job's
  status.json; people on ``[notify] urls`` get a message when ``[notify] events`` asks for it.
- :meth:`Notices.trouble`: a message about the machine's trouble (a full disk, an engine that fails to load).
- :meth:`Notices.broker`: a farm intake's looks at the broker; a message once it has been away for a minute.

The callbacks are sent by the queue's thread in every process that renders (``heygemd run``, ``once``, ``worker``:
:meth:`Notices.start` with ``callbacks=True``); a process that only finishes jobs now and then (``heygemd web``,
``heygemd cancel``) queues them for those. The pending deliveries are in the state folder all share, so whichever
sender comes first sends each attempt once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from types import TracebackType

import structlog

from heygemd.daemon.hooks import Trouble
from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.status import CallbackRecord, JobStatus, record_callback
from heygemd.errors import CallbackNotAllowed
from heygemd.layout import job_folder, status_file
from heygemd.notify.alerts import BROKER_GRACE_S, Alerts, Outage
from heygemd.notify.callbacks import EVENT, CallbackQueue, CallbackSender, OnChange, check_callback_url, utc
from heygemd.outgoing import host_of, parse_url
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.notify")


class Notices:
    """The callbacks and the messages of ``settings``; ``on_callback`` is told of every callback record after
    status.json (the metrics count them), ``on_alert`` whether each message was sent."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_callback: OnChange | None = None,
        on_alert: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.on_callback = on_callback
        self.clock = clock
        self.callbacks = CallbackQueue(
            settings.paths.state_dir, CallbackSender(settings.notify), on_change=self._recorded, clock=clock
        )
        self.alerts = Alerts(settings.notify, public_url=settings.web.public_url, on_sent=on_alert)
        self.broker_outage = Outage(BROKER_GRACE_S)
        self._sending = False

    # -- the hooks

    def job_ended(self, status: JobStatus, options: JobOptions) -> None:
        """A job ended: its message for people, and its callback queued (or, for a URL the server does not call, a
        failed record in status.json saying why)."""
        self.alerts.job_ended(status)
        url = options.callback_url
        if url is None:
            return
        try:
            check_callback_url(url, self.settings.notify)
        except CallbackNotAllowed as exc:  # a NAS job's job.toml: nothing checked it before
            log.error("notify.callback_refused", job_id=status.job_id, error=exc.message, hint=exc.hint)
            refused = CallbackRecord(
                delivery=uuid.uuid4().hex,
                event=EVENT,
                host=host_of(parse_url(url)),  # job.toml's callback_url is an http(s) URL with a host
                state="failed",
                last_error=f"{exc.code}: {exc.message}",
                finished=utc(self.clock()),
            )
            self._recorded(status.job_id, refused)
            return
        self.callbacks.enqueue(status.job_id, url, status.model_dump_json().encode("utf-8"))

    def trouble(self, kind: Trouble, detail: str) -> None:
        self.alerts.trouble(kind, detail)

    def broker(self, problem: str | None, now: float) -> None:
        """A look at a farm's broker (``problem``: what is wrong, None when it answered) at monotonic ``now``."""
        if self.broker_outage.update(problem is None, now):
            self.trouble(
                "broker_unreachable",
                f"{problem}; away for over {BROKER_GRACE_S:g} s. New jobs wait in the inbox until it answers: check "
                "redis-server and [queue] broker (heygemd check).",
            )

    def _recorded(self, job_id: str, record: CallbackRecord) -> None:
        record_callback(status_file(job_folder(self.settings.paths.outbox, job_id)), record)
        if self.on_callback is not None:
            self.on_callback(job_id, record)

    # -- the threads

    def start(self, *, callbacks: bool) -> "Notices":
        """Start sending messages, and with ``callbacks`` (a process that renders) the pending callbacks too when
        the server has a signing secret."""
        if self.alerts.enabled:
            self.alerts.start()
        if callbacks and self.settings.notify.signing_secret is not None:
            self.callbacks.start()
            self._sending = True
        return self

    def stop(self) -> None:
        """Stop after the callback attempt in progress and the messages already queued."""
        if self._sending:
            self.callbacks.stop()
            self._sending = False
        self.alerts.stop()

    def __enter__(self) -> "Notices":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
