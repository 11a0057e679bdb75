"""Who is rendering: every process that renders jobs (``heygemd run`` and ``once`` on a single host, a farm's
``heygemd worker``) leaves a heartbeat record, rewritten every :data:`BEAT_SECONDS` by its lifecycle heartbeat
(:class:`heygemd.daemon.lifecycle.Heartbeat`), so that the web server, ``heygemd status`` and the submission of a
job know whether anything will take a job, and which engines it can run.

On a single host the record is a file of the process's own in the state folder (``<state>/renderers/<host>-<pid>
.json``, :class:`PresenceFile`), removed when the process ends; a farm's workers keep theirs in Redis
(:mod:`heygemd.farm.presence`). A record counts while its last beat is younger than :data:`MISSED_BEATS` beats and,
on this machine, its process is alive and the same process (a killed renderer's pid, reused, is not it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from heygemd.daemon.claims import alive_here, process_identity
from heygemd.daemon.status import utc_now
from heygemd.errors import ConfigError, HeygemdError
from heygemd.fsutil import atomic_write_bytes, read_regular
from heygemd.layout import renderer_file, renderer_files, renderers_root

log = structlog.get_logger("heygemd.service")

BEAT_SECONDS = 10.0
"""How often a renderer rewrites its record."""
MISSED_BEATS = 3
"""A record whose process missed this many beats (killed, frozen, its host down) no longer counts."""
RECORD_MAX_BYTES = 64 * 1024
"""A record is a few hundred bytes; a larger file in ``renderers/`` is not heygemd's and is not read."""

RendererKind = Literal["daemon", "worker"]


class Renderer(BaseModel):
    """One process that renders jobs, as its last beat described it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: RendererKind
    """``daemon``: ``heygemd run`` or ``once`` on a single host; ``worker``: a farm's ``heygemd worker``."""
    name: str
    """What it is to a person: ``heygemd run``, ``heygemd once``, or the worker's node name (``cuda-0@gpu-2``)."""
    host: str
    pid: int
    process: str | None = None
    """Its :func:`~heygemd.daemon.claims.process_identity`, so a reused pid is not taken for it."""
    engines: tuple[str, ...] = ()
    """The engines it can run now (their files are there), in ``auto``'s order."""
    started: AwareDatetime
    beat: AwareDatetime
    interval_s: float = BEAT_SECONDS

    def live(self, now: datetime) -> bool:
        """Whether it still renders: beaten within :data:`MISSED_BEATS` beats, and alive when it is on this host."""
        if now - self.beat > timedelta(seconds=MISSED_BEATS * self.interval_s):
            return False
        return self.host != socket.gethostname() or alive_here(self.pid, self.process)

    def described(self) -> str:
        """``heygemd run on gpu-1 (musetalk, mouthwarp)``, for messages."""
        where = self.name if self.kind == "worker" else f"{self.name} on {self.host}"
        return f"{where} ({', '.join(self.engines) or 'no engine'})"


def this_process(
    kind: RendererKind, name: str, engines: Iterable[str], started: datetime, *, interval_s: float = BEAT_SECONDS
) -> Renderer:
    """The record of this process, beating now."""
    pid = os.getpid()
    return Renderer(
        kind=kind,
        name=name,
        host=socket.gethostname(),
        pid=pid,
        process=process_identity(pid),
        engines=tuple(engines),
        started=started,
        beat=utc_now(),
        interval_s=interval_s,
    )


class PresenceFile:
    """This process's record in the state folder: written at each beat (atomically), removed at the end. A write
    the share refuses is logged once (until one works again) and never stops the process."""

    def __init__(self, state_dir: Path, record: Callable[[], Renderer]) -> None:
        self.state_dir = Path(state_dir)
        self.record = record
        self.path = renderer_file(self.state_dir, socket.gethostname(), os.getpid())
        self._failing = False

    def announce(self) -> None:
        try:
            renderers_root(self.state_dir)
            atomic_write_bytes(self.path, self.record().model_dump_json(indent=2).encode("utf-8") + b"\n")
        except (OSError, ConfigError) as exc:
            if not self._failing:
                error = exc.message if isinstance(exc, ConfigError) else f"{exc.filename}: {exc.strerror}"
                log.warning(
                    "presence.write_failed",
                    error=error,
                    hint="The web server and `heygemd status` may not see this renderer until it can write there.",
                )
            self._failing = True
        else:
            self._failing = False

    def withdraw(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:  # it goes stale by itself
            log.warning("presence.remove_failed", error=f"{exc.filename}: {exc.strerror}")


def _records(state_dir: Path) -> list[tuple[Path, Renderer | None]]:
    """Every record file with what it holds (None: not a record)."""
    found: list[tuple[Path, Renderer | None]] = []
    for path in renderer_files(state_dir):
        try:
            found.append((path, Renderer.model_validate_json(read_regular(path, max_bytes=RECORD_MAX_BYTES))))
        except FileNotFoundError:  # its process ended between the listing and the read
            continue
        except (OSError, ValidationError, HeygemdError):  # a link, a FIFO, half a file of an older heygemd
            found.append((path, None))
    return found


def live_renderers(state_dir: Path, *, now: datetime | None = None) -> list[Renderer]:
    """The renderers of this state folder whose records are live (:meth:`Renderer.live`), by name."""
    now = now or utc_now()
    live = [record for _path, record in _records(state_dir) if record is not None and record.live(now)]
    return sorted(live, key=lambda r: (r.name, r.host, r.pid))


def remove_dead_records(state_dir: Path, *, now: datetime | None = None) -> list[Path]:
    """At a renderer's start: the records of processes that ended without removing theirs (killed) go."""
    now = now or utc_now()
    removed = []
    for path, record in _records(state_dir):
        if record is not None and not record.live(now):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a share holding it: it stays left out, and goes at a later start
                continue
            removed.append(path)
    return removed
