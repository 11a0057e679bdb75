"""``<state>/waiting.json``: which inbox jobs the daemon does not take yet, and for which files, so that
``heygemd status`` (and later the web pages) can say it as the log does. Written atomically by the service loop
whenever that changes; absent or unreadable means "nothing known to wait"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from heygemd.fsutil import atomic_write_bytes

WAITING_FILE = "waiting.json"


class WaitingJobs(BaseModel):
    """Inbox job folder name -> what it waits for (``"bob.mp4: 0 bytes so far"``, ``"b.mp4.part"``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jobs: dict[str, list[str]] = {}


def write_waiting(state_dir: Path, waiting: Mapping[str, Sequence[str]]) -> None:
    """Record what the inbox's jobs wait for (jobs waiting for nothing in particular are left out)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    model = WaitingJobs(jobs={name: list(files) for name, files in waiting.items() if files})
    atomic_write_bytes(Path(state_dir) / WAITING_FILE, model.model_dump_json(indent=2).encode("utf-8") + b"\n")


def read_waiting(state_dir: Path) -> dict[str, list[str]]:
    """What :func:`write_waiting` recorded last; empty when nothing was (or the file is being replaced)."""
    try:
        return WaitingJobs.model_validate_json((Path(state_dir) / WAITING_FILE).read_bytes()).jobs
    except (OSError, ValidationError):
        return {}
