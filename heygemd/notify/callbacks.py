"""Signed per-job callbacks: when a job ends, its status document is POSTed to the job's ``callback_url``, signed,
at least once, from a queue of pending deliveries in the state folder that survives a restart or a kill.

A delivery is the job, the event (``job.finished``), the URL, the body (the job's status.json document: the very
bytes signed and sent on every attempt) and an id that stays the same on every attempt, so a receiver can drop
duplicates. Its headers::

    Content-Type: application/json
    Heygemd-Event: job.finished
    Heygemd-Delivery: <id>
    Heygemd-Signature: t=<unix time of the attempt>,v1=<hex HMAC-SHA256 of "<t>.<body>" with [notify] signing_secret>

A 2xx answer delivers it (the whole answer within TIMEOUT_S). Anything else (another status, a redirect:
never followed, no answer, a host or address not allowed) is tried again after the next of BACKOFF_S (30 s, 2 min,
10 min, 1 h, 6 h), then given up and logged. The URL is checked against ``[notify] callback_hosts`` when the job
is submitted (:func:`check_callback_url`) and its addresses again at every attempt (:mod:`heygemd.hosts`).

The queue: one file per delivery, ``<state>/callbacks/pending/<id>.json``, written atomically. A sender claims a
delivery that is due by renaming it to ``sending/<id>.<lease end>.json`` (one rename wins, so processes sharing the
state folder never send the same attempt twice); then it removes it (delivered, given up) or writes it back into
``pending/`` with its next attempt time. A claim whose lease ran out (its process was killed while sending) goes
back to ``pending/``. ``<state>/callbacks`` is made private to heygemd's user (mode 0700) where the filesystem
allows: the files hold the URLs, which may carry tokens.

What status.json shows of a delivery is a :class:`heygemd.daemon.status.CallbackRecord` (the host, never the URL),
handed to ``on_change`` when it is queued and after every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heygemd.daemon.status import CallbackRecord, CallbackState
from heygemd.errors import CallbackNotAllowed, HeygemdError
from heygemd.fsutil import atomic_write_bytes, own_dir, read_regular, remove_temps
from heygemd.hosts import AllowList, Resolver, system_resolver
from heygemd.layout import CALLBACKS
from heygemd.layout import CALLBACKS_PENDING as PENDING
from heygemd.layout import CALLBACKS_SENDING as SENDING
from heygemd.outgoing import REDIRECTS, Outgoing, SendFailed, host_of, parse_url
from heygemd.settings import NotifySettings

log = structlog.get_logger("heygemd.notify")

EVENT = "job.finished"
TIMEOUT_S = 10.0
"""Seconds the receiver may take, all in all, to accept the connection and send its answer's status and headers."""
BACKOFF_S: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0, 21600.0)
"""Waits before the 2nd, 3rd, ... attempt; after the last one fails the delivery is given up."""
LEASE_S = 300.0
"""How long a sender holds a delivery it is sending; after that another process (or a restart) takes it back."""
POLL_S = 5.0
"""How often the sender thread looks for deliveries that are due, when nothing wakes it sooner."""
QUEUE_SIZE = 256
"""Wake-ups waiting for the sender thread; more are dropped (the deliveries are in the folder: the next look sends
them)."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""A delivery file is the status document and a few fields; a larger one is not heygemd's and is not read."""


class Delivery(BaseModel):
    """A pending delivery as the state folder keeps it. Unix times: ``created``, ``next_at`` (when due)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    job_id: str
    event: str
    url: str
    body: str
    created: float
    next_at: float
    attempts: int = Field(0, ge=0)
    last_error: str | None = None

    @property
    def host(self) -> str:
        try:
            return host_of(parse_url(self.url))
        except ValueError:
            return "(not a URL)"

    def record(self, state: CallbackState, *, finished: float | None = None) -> CallbackRecord:
        return CallbackRecord(
            delivery=self.id,
            event=self.event,
            host=self.host,
            state=state,
            attempts=self.attempts,
            last_error=self.last_error,
            next_attempt=utc(self.next_at) if state == "pending" else None,
            finished=utc(finished) if finished is not None else None,
        )


def utc(t: float) -> datetime:
    """Unix time ``t`` as an aware UTC datetime."""
    return datetime.fromtimestamp(t, timezone.utc)


def signature(secret: bytes, body: bytes, t: int) -> str:
    """The Heygemd-Signature header: ``t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret, f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def callback_allow_list(notify: NotifySettings) -> AllowList:
    return AllowList.of(notify.callback_hosts, setting="notify.callback_hosts", refusal=CallbackNotAllowed)


def check_callback_url(url: str, notify: NotifySettings) -> None:
    """At submission: CallbackNotAllowed when callbacks are off (no ``notify.signing_secret``), ``url`` is no http(s)
    URL, or its host is not allowed by ``notify.callback_hosts``. No DNS (addresses are checked when sending)."""
    if notify.signing_secret is None:
        raise CallbackNotAllowed(
            "this server sends no callbacks: notify.signing_secret is not set",
            hint="Poll the job's status instead, or ask the operator to set notify.signing_secret "
            "(HEYGEMD_NOTIFY__SIGNING_SECRET) and notify.callback_hosts.",
        )
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise CallbackNotAllowed(f"the callback_url {exc}", hint="Give an http:// or https:// URL.") from None
    callback_allow_list(notify).check_host(host_of(parsed))


class CallbackSender:
    """One attempt at a delivery: the signed POST to an allowed address."""

    def __init__(self, notify: NotifySettings, *, resolver: Resolver = system_resolver, timeout: float = TIMEOUT_S):
        self.secret = notify.signing_secret
        self.outgoing = Outgoing(callback_allow_list(notify), timeout, resolver)

    def attempt(self, delivery: Delivery, now: float) -> str | None:
        """Send ``delivery`` signed at ``now``; None when a 2xx answer came, else why not (naming no URL)."""
        if self.secret is None:
            return "not sent: notify.signing_secret is not set"
        body = delivery.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Heygemd-Event": delivery.event,
            "Heygemd-Delivery": delivery.id,
            "Heygemd-Signature": signature(self.secret.get_secret_value().encode("utf-8"), body, int(now)),
        }
        try:
            with self.outgoing.open(
                "POST", delivery.url, content=body, headers=headers, deadline=self.outgoing.timeout
            ) as answer:
                if 200 <= answer.status_code < 300:
                    return None
                if answer.status_code in REDIRECTS:
                    return f"answered {answer.status_code} (a redirect: callbacks never follow one)"
                return f"answered {answer.status_code} {answer.reason_phrase}".rstrip()
        except CallbackNotAllowed as exc:
            return exc.message
        except SendFailed as exc:
            return exc.reason
        except ValueError as exc:
            return f"the callback_url {exc}"


OnChange = Callable[[str, CallbackRecord], None]
"""``(job id, record)``: told after every attempt (and when a delivery is queued)."""


class CallbackQueue:
    """The pending deliveries of ``state_dir`` and the thread that sends them.

    ``enqueue`` (at a job's end) writes the delivery and wakes the thread; ``step(now)`` makes one pass (tests call
    it with their own clock instead of starting the thread); ``start``/``stop`` run the thread.
    """

    def __init__(
        self,
        state_dir: Path,
        sender: CallbackSender,
        *,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.state_dir = state_dir
        self.sender = sender
        self.on_change = on_change
        self.clock = clock
        self.poll_s = poll_s
        self._wake: queue.Queue[None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreadable: set[str] = set()
        self._next_at: dict[str, tuple[tuple[int, int, int], float]] = {}
        """Pending file name -> ((inode, mtime, size) when read, its next attempt time)."""

    # -- the folder

    def _folder(self, name: str) -> Path:
        top = own_dir(self.state_dir, CALLBACKS)
        if os.stat(top).st_mode & 0o077:
            try:
                os.chmod(top, 0o700)
            except PermissionError:  # a share that keeps its own permissions
                pass
        return own_dir(top, name)

    def _write_pending(self, delivery: Delivery) -> None:
        atomic_write_bytes(self._folder(PENDING) / f"{delivery.id}.json", delivery.model_dump_json().encode("utf-8"))

    def _read(self, path: Path) -> Delivery | None:
        try:
            return Delivery.model_validate_json(read_regular(path, max_bytes=MAX_FILE_BYTES))
        except FileNotFoundError:
            return None
        except (ValidationError, HeygemdError, OSError) as exc:  # not heygemd's: a link, a FIFO, another format
            if path.name not in self._unreadable:
                self._unreadable.add(path.name)
                log.error("notify.callback_unreadable", file=str(path), error=str(exc))
            return None

    def _tell(self, job_id: str, record: CallbackRecord) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(job_id, record)
        except Exception:  # a status.json that cannot be written must not hold up the deliveries: logged, traceback
            log.exception("notify.callback_record_failed", job_id=job_id, delivery=record.delivery)

    # -- queueing

    def enqueue(self, job_id: str, url: str, body: bytes, *, event: str = EVENT) -> CallbackRecord:
        """Queue a delivery of ``body`` (the job's status document) to ``url``; due at once. Written to the state
        folder before this returns (so it survives a kill from now on); the sending happens in the thread."""
        now = self.clock()
        delivery = Delivery(
            id=uuid.uuid4().hex, job_id=job_id, event=event, url=url, body=body.decode(), created=now, next_at=now
        )
        self._write_pending(delivery)
        log.info("notify.callback_queued", job_id=job_id, delivery=delivery.id, host=delivery.host)
        record = delivery.record("pending")
        self._tell(job_id, record)
        try:
            self._wake.put_nowait(None)
        except queue.Full:  # the thread is busy anyway; it finds the file on its next look
            pass
        return record

    def pending(self) -> list[Delivery]:
        """The deliveries waiting in the folder (not those being sent right now), soonest first."""
        found = (self._read(self._folder(PENDING) / f"{name}.json") for _, name in self._schedule())
        return [d for d in found if d is not None]

    def _schedule(self) -> list[tuple[float, str]]:
        """(next attempt time, delivery id) of every pending delivery, soonest first. A file is read only when it is
        new or changed since the last look (a receiver that is down for hours leaves many bodies waiting)."""
        folder = self._folder(PENDING)
        with os.scandir(folder) as it:
            entries = [e for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
        known: dict[str, tuple[tuple[int, int, int], float]] = {}
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # claimed by another process meanwhile
                continue
            version = (info.st_ino, info.st_mtime_ns, info.st_size)
            cached = self._next_at.get(entry.name)
            if cached is None or cached[0] != version:
                delivery = self._read(folder / entry.name)
                if delivery is None:
                    continue
                cached = (version, delivery.next_at)
            known[entry.name] = cached
        self._next_at = known
        return sorted((next_at, name.removesuffix(".json")) for name, (_, next_at) in known.items())

    # -- sending

    def step(self, now: float | None = None) -> list[CallbackRecord]:
        """One pass at ``now`` (default: the clock): take back deliveries whose sender's lease ran out, then attempt
        every delivery that is due. Returns the records of the attempts made."""
        now = self.clock() if now is None else now
        self._recover(now)
        done = []
        for next_at, delivery_id in self._schedule():
            if next_at > now:
                break
            claimed = self._claim(delivery_id, now)
            if claimed is not None:
                done.append(self._attempt(claimed[0], claimed[1], now))
        return done

    def _claim(self, delivery_id: str, now: float) -> tuple[Delivery, Path] | None:
        """Rename the delivery into ``sending/`` with a lease; None when another process took it first."""
        source = self._folder(PENDING) / f"{delivery_id}.json"
        claimed = self._folder(SENDING) / f"{delivery_id}.{int(now + LEASE_S)}.json"
        try:
            os.rename(source, claimed)
        except FileNotFoundError:
            return None
        delivery = self._read(claimed)
        if delivery is None:
            return None
        if delivery.next_at > now:  # another process attempted it since it was listed: not due any more
            os.rename(claimed, source)
            return None
        return delivery, claimed

    def _recover(self, now: float) -> None:
        pending = self._folder(PENDING)
        remove_temps(pending, min_age_s=LEASE_S, now=now)
        for claimed in self._folder(SENDING).glob("[!.]*.json"):
            delivery_id, _, lease = claimed.name.removesuffix(".json").partition(".")
            if not lease.isdigit() or int(lease) >= now:
                continue
            back = pending / f"{delivery_id}.json"
            try:
                if back.exists():  # written back, then killed before the claim was removed
                    claimed.unlink()
                else:
                    os.rename(claimed, back)
                    log.warning("notify.callback_taken_back", delivery=delivery_id)
            except FileNotFoundError:  # another process took it back first
                continue

    def _attempt(self, delivery: Delivery, claimed: Path, now: float) -> CallbackRecord:
        error = self.sender.attempt(delivery, now)
        tried = delivery.model_copy(update={"attempts": delivery.attempts + 1, "last_error": error})
        fields = {"job_id": delivery.job_id, "delivery": delivery.id, "host": delivery.host, "attempts": tried.attempts}
        if error is None:
            record = tried.record("delivered", finished=now)
            claimed.unlink(missing_ok=True)
            log.info("notify.callback_delivered", **fields)
        elif tried.attempts > len(BACKOFF_S):
            record = tried.record("failed", finished=now)
            claimed.unlink(missing_ok=True)
            log.error("notify.callback_given_up", error=error, **fields)
        else:
            tried = tried.model_copy(update={"next_at": now + BACKOFF_S[tried.attempts - 1]})
            self._write_pending(tried)
            claimed.unlink(missing_ok=True)
            record = tried.record("pending")
            log.warning("notify.callback_retry", error=error, next_attempt=record.next_attempt, **fields)
        self._tell(delivery.job_id, record)
        return record

    # -- the thread

    def start(self) -> None:
        """Send from a thread of its own: at once (deliveries left from before a restart), when woken by
        ``enqueue``, and every ``poll_s`` seconds."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heygemd-callbacks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = TIMEOUT_S + 5) -> None:
        """Stop the thread after the attempt in progress (a delivery it holds is taken back after LEASE_S)."""
        self._stop.set()
        try:
            self._wake.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the thread's boundary: a failing pass (a state folder gone) is tried again later
                log.exception("notify.callbacks_crashed")
            try:
                self._wake.get(timeout=self.poll_s)
            except queue.Empty:
                pass
