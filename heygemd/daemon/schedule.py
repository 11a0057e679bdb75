"""Whether the intake takes jobs now: the rendering hours (``[intake] hours``, :mod:`heygemd.hours`) and the pause
(``heygemd pause`` / ``heygemd resume``, the dashboard's buttons).

The pause is a file in the state folder, ``paused.json`` (who paused, since when), so it holds across restarts and
for every process that serves the inbox (a single host's daemon, a farm's intake). Any file there means paused,
even one that cannot be read (it is never followed through a link nor waited on): remove it, or ``heygemd
resume``, to take jobs again.

Outside the hours or while paused no job starts; a job in progress finishes. Waiting jobs say why:
``waits for 20:00`` or ``paused``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from heygemd.daemon.status import utc_now
from heygemd.errors import HeygemdError
from heygemd.fsutil import atomic_write_bytes, own_dir, read_regular
from heygemd.hours import Hours, shown_time
from heygemd.layout import pause_file

PAUSE_MAX_BYTES = 64 * 1024
"""paused.json is a few dozen bytes; a larger one is not read (it still pauses)."""


def local_now() -> datetime:
    """The machine's local time, aware (what the rendering hours are read against)."""
    return datetime.now().astimezone()


class Pause(BaseModel):
    """``paused.json``: who paused the intake, and when."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    since: AwareDatetime
    by: str = ""


def read_pause(state_dir: Path) -> Pause | None:
    """The pause, or None while the intake takes jobs. A file that cannot be read still pauses, dated by its
    modification time."""
    path = pause_file(state_dir)
    try:
        return Pause.model_validate_json(read_regular(path, max_bytes=PAUSE_MAX_BYTES))
    except (FileNotFoundError, NotADirectoryError):  # no pause, or no state folder (a file where the inbox is)
        return None
    except (OSError, ValidationError, ValueError, HeygemdError):
        try:
            mtime = path.lstat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Pause(since=datetime.fromtimestamp(mtime, timezone.utc))


def pause(state_dir: Path, by: str, *, now: Callable[[], datetime] = utc_now) -> Pause:
    """Pause the intake (kept across restarts); pausing again keeps the first pause's time and author."""
    current = read_pause(state_dir)
    if current is not None:
        return current
    record = Pause(since=now(), by=by)
    atomic_write_bytes(pause_file(own_dir(state_dir)), record.model_dump_json(indent=2).encode("utf-8") + b"\n")
    return record


def resume(state_dir: Path) -> bool:
    """Take jobs again; False when the intake was not paused."""
    try:
        pause_file(state_dir).unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class IntakeState:
    """Whether the intake takes jobs at one moment, and if not, why and until when."""

    hours: Hours
    paused: Pause | None
    opens_at: datetime | None
    """When the hours open next (None while they are open)."""

    @property
    def taking(self) -> bool:
        return self.paused is None and self.opens_at is None

    @property
    def waits_for(self) -> str | None:
        """What waiting jobs say: ``paused``, ``waits for 20:00``, or None while jobs are taken."""
        if self.paused is not None:
            return "paused" + (f" by {self.paused.by}" if self.paused.by else "")
        if self.opens_at is not None:
            return f"waits for {shown_time(self.opens_at.hour * 60 + self.opens_at.minute)}"
        return None


class Schedule:
    """The intake's hours and pause for the state folder ``state_dir``; ``clock`` is the local wall clock."""

    def __init__(
        self, state_dir: Path, hours: tuple[str, ...] | list[str], *, clock: Callable[[], datetime] = local_now
    ) -> None:
        self.state_dir = Path(state_dir)
        self.hours = Hours(hours)
        self.clock = clock

    def paused(self) -> bool:
        """Whether the pause file is there (one look, no read)."""
        return os.path.lexists(pause_file(self.state_dir))

    def changed(self) -> Callable[[], bool]:
        """A test that turns true once the intake is paused or resumed after this call (a waiting loop asks it
        every quarter second, so a resume is acted on at once)."""
        before = self.paused()
        return lambda: self.paused() != before

    def now(self) -> IntakeState:
        return self.at(self.clock())

    def at(self, when: datetime) -> IntakeState:
        return IntakeState(self.hours, read_pause(self.state_dir), self.hours.next_opening(when))

    def seconds_until_open(self, state: IntakeState) -> float | None:
        """Seconds until the hours open (None while open, or while paused: a resume can come at any time)."""
        if state.paused is not None or state.opens_at is None:
            return None
        return max(0.0, (state.opens_at - self.clock()).total_seconds())
