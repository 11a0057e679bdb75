"""``<state>/waiting.json``: which inbox jobs the daemon does not take yet, and why (files it waits for, or the
time it is taken once it has settled), so that ``heygemd status`` and the web pages can say it as the log does.
Written atomically by the service loop whenever that changes; absent or unreadable means "nothing known to wait"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from heygemd.errors import HeygemdError
from heygemd.fsutil import atomic_write_bytes, own_dir, read_regular
from heygemd.layout import waiting_file

WAITING_MAX_BYTES = 4 * 1024 * 1024
"""More than any list of waiting jobs heygemd writes; a larger waiting.json is not heygemd's and is not read."""


class WaitingJobs(BaseModel):
    """What the inbox's jobs that are not taken yet wait for."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jobs: dict[str, list[str]] = {}
    """Inbox job folder name -> the files it waits for (``"bob.mp4: 0 bytes so far"``, ``"b.mp4.part"``)."""
    settling: dict[str, AwareDatetime] = {}
    """Inbox job folder name -> when it is taken if nothing in it changes meanwhile (it settles)."""
    ready_marker: str = ".ready"
    """The file that has a job taken at once (``intake.ready_marker``)."""


def write_waiting(
    state_dir: Path,
    waiting: Mapping[str, Sequence[str]],
    settling: Mapping[str, datetime] | None = None,
    *,
    ready_marker: str = ".ready",
) -> None:
    """Record what the inbox's jobs wait for (jobs waiting for no file in particular are left out of ``jobs``)
    and when the settling ones are taken."""
    own_dir(state_dir)
    model = WaitingJobs(
        jobs={name: list(files) for name, files in waiting.items() if files},
        settling=dict(settling or {}),
        ready_marker=ready_marker,
    )
    atomic_write_bytes(waiting_file(state_dir), model.model_dump_json(indent=2).encode("utf-8") + b"\n")


def read_waiting_jobs(state_dir: Path) -> WaitingJobs:
    """What :func:`write_waiting` recorded last; empty when nothing was (or the file is being replaced)."""
    try:
        return WaitingJobs.model_validate_json(read_regular(waiting_file(state_dir), max_bytes=WAITING_MAX_BYTES))
    except (OSError, ValidationError, HeygemdError):  # a link, a FIFO: not heygemd's, never followed nor blocked on
        return WaitingJobs()


def read_waiting(state_dir: Path) -> dict[str, list[str]]:
    """The jobs waiting for files, as :func:`write_waiting` recorded them last."""
    return read_waiting_jobs(state_dir).jobs


def waiting_text(name: str, waiting: WaitingJobs, now: datetime) -> str | None:
    """What inbox job ``name`` waits for, in a few words (None when nothing is known):
    ``settling: taken in 52 s, or at once with .ready`` or ``waiting for: bob.mp4: 0 bytes so far``."""
    files = waiting.jobs.get(name)
    if files:
        return "waiting for: " + "; ".join(files)
    ready_at = waiting.settling.get(name)
    if ready_at is None:
        return None
    seconds = max(0, math.ceil((ready_at - now).total_seconds()))
    return f"settling: taken in {seconds} s, or at once with {waiting.ready_marker}"
