"""Server-Sent Events fed by status.json changes: the pages' live updates.

The outbox (and the inbox, for queued jobs) is looked at every POLL_SECONDS; a job whose status.json changed
is sent as ``event: job`` with the status document, a job that vanished as ``event: removed``, and a change of
what the machine is doing as ``event: machine``. Polling, not inotify, because the outbox is often a share
where inotify sees nothing; at 0.25 s a change reaches the page well within a second.
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


def _changes(catalog: Catalog, job_id: str | None, last: dict[str, tuple[int, int]] | None,
             machine: dict[str, object] | None) -> tuple[list[str], dict[str, tuple[int, int]], dict[str, object]]:
    sigs = catalog.signatures(job_id)
    out: list[str] = []
    now_ns = time.time_ns()
    for jid, sig in sorted(sigs.items()):
        if last is None:
            if job_id is None and now_ns - sig[0] > FRESH_NS:
                continue
        elif last.get(jid) == sig:
            continue
        try:
            status = catalog.status(jid)
        except HeygemdError:
            continue
        out.append(sse("job", status.model_dump(mode="json")))
    for jid in sorted((last or {}).keys() - sigs.keys()):
        out.append(sse("removed", {"job_id": jid}))
    now_machine = asdict(catalog.machine())
    if now_machine != machine:
        out.append(sse("machine", now_machine))
    return out, sigs, now_machine


async def event_stream(catalog: Catalog, job_id: str | None,
                       disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
    """The event stream for one client: every job (``job_id`` None) or one job."""
    yield "retry: 1000\n\n"
    last: dict[str, tuple[int, int]] | None = None
    machine: dict[str, object] | None = None
    quiet_since = time.monotonic()
    while not await disconnected():
        out, last, machine = await run_in_threadpool(_changes, catalog, job_id, last, machine)
        for chunk in out:
            yield chunk
        if out:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
            yield ": ping\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
