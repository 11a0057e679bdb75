"""``<state>/waiting.json``: which inbox jobs the daemon does not take yet, and for which files, so that
``heygemd status`` (and later the web pages) can say it as the log does. Written atomically by the service loop
whenever that changes; absent or unreadable means "nothing known to wait"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from heygemd.errors import HeygemdError
from heygemd.fsutil import atomic_write_bytes, own_dir, read_regular
from heygemd.layout import waiting_file

WAITING_MAX_BYTES = 4 * 1024 * 1024
"""More than any list of waiting jobs heygemd writes; a larger waiting.json is not heygemd's and is not read."""


class WaitingJobs(BaseModel):
    """Inbox job folder name -> what it waits for (``"bob.mp4: 0 bytes so far"``, ``"b.mp4.part"``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jobs: dict[str, list[str]] = {}


def write_waiting(state_dir: Path, waiting: Mapping[str, Sequence[str]]) -> None:
    """Record what the inbox's jobs wait for (jobs waiting for nothing in particular are left out)."""
    own_dir(state_dir)
    model = WaitingJobs(jobs={name: list(files) for name, files in waiting.items() if files})
    atomic_write_bytes(waiting_file(state_dir), model.model_dump_json(indent=2).encode("utf-8") + b"\n")


def read_waiting(state_dir: Path) -> dict[str, list[str]]:
    """What :func:`write_waiting` recorded last; empty when nothing was (or the file is being replaced)."""
    try:
        data = read_regular(waiting_file(state_dir), max_bytes=WAITING_MAX_BYTES)
        return WaitingJobs.model_validate_json(data).jobs
    except (OSError, ValidationError, HeygemdError):  # a link, a FIFO: not heygemd's, never followed nor blocked on
        return {}
