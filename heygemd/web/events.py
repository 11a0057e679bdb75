"""Server-Sent Events fed by status.json changes: the pages' live updates.

The outbox (and the inbox and claim folder, for queued jobs) is looked at every POLL_SECONDS; a job whose
status.json changed is sent as ``event: job`` with the status document, a job gone for two looks in a row as
``event: removed`` (one look can fall between a claim's rename and the next listing), and a change of what
the machine is doing as ``event: machine``. Polling, not inotify, because the outbox is often a share where
inotify sees nothing; at 0.25 s a change reaches the page well within a second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict

from starlette.concurrency import run_in_threadpool

from heygemd.errors import HeygemdError
from heygemd.web.catalog import Catalog

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
FRESH_NS = 5_000_000_000
"""On connecting to the whole list, jobs changed this recently are sent at once (the page may predate them)."""


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


class ChangeFeed:
    """What one client has been sent so far, and the events that bring it up to date."""

    def __init__(self, catalog: Catalog, job_id: str | None) -> None:
        self.catalog = catalog
        self.job_id = job_id
        self.sent: dict[str, tuple[int, int]] | None = None  # None: nothing looked at yet
        self.missing: set[str] = set()
        self.machine: dict[str, object] | None = None

    def poll(self) -> list[str]:
        sigs = self.catalog.signatures(self.job_id)
        first = self.sent is None
        sent = self.sent if self.sent is not None else {}
        out: list[str] = []
        now_ns = time.time_ns()
        for jid, sig in sorted(sigs.items()):
            if sent.get(jid) == sig or (first and self.job_id is None and now_ns - sig[0] > FRESH_NS):
                sent[jid] = sig
                continue
            try:
                status = self.catalog.status(jid)
            except HeygemdError:
                continue
            sent[jid] = sig
            out.append(sse("job", status.model_dump(mode="json")))
        gone = sent.keys() - sigs.keys()
        for jid in sorted(gone & self.missing):
            del sent[jid]
            out.append(sse("removed", {"job_id": jid}))
        self.missing = gone - self.missing
        self.sent = sent
        machine = asdict(self.catalog.machine())
        if machine != self.machine:
            self.machine = machine
            out.append(sse("machine", machine))
        return out


async def event_stream(
    catalog: Catalog, job_id: str | None, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    """The event stream for one client: every job (``job_id`` None) or one job."""
    yield "retry: 1000\n\n"
    feed = ChangeFeed(catalog, job_id)
    quiet_since = time.monotonic()
    while not await disconnected():
        out = await run_in_threadpool(feed.poll)
        for chunk in out:
            yield chunk
        if out:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
            yield ": ping\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
