"""Readiness: which inbox entries are jobs, and when a job folder is completely copied.

A job is ready when its ``.ready`` marker exists (at once: a file that is still broken then fails with its own
error), or when nothing in it changed for ``settle_seconds`` and its audio and presenter files are complete
(:mod:`completeness`: not empty, not zero-filled unless ffprobe reads them, an MP4/MOV with its index and
streams ffprobe reads, not open for writing by a local process) -- or they stayed incomplete, unchanged, for
``incomplete_timeout``: then it is taken and the broken file fails with its own clear error. Never while a file
that means "copy in flight" is present, never when it holds no real file. :class:`ReadinessTracker` is the one
place this rule lives; ``heygemd run`` and ``heygemd once`` both use it.
"""

from __future__ import annotations

import enum
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from heygemd.daemon.completeness import CompletenessCheck
from heygemd.names import NameKind, classify_name, encodable_name, is_readme, plain_name


@dataclass(frozen=True)
class Candidate:
    """A folder in the inbox that may be a job: its name and full path."""

    name: str
    path: Path


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def scan_inbox(
    inbox: Path,
    state_dir: Path | None = None,
    *,
    on_bad_name: Callable[[str], None] | None = None,
    on_loose: Callable[[str], None] | None = None,
) -> list[Candidate]:
    """The job folders directly under ``inbox``, sorted by name.

    Skipped: files, symlinks, the state directory, dot/junk folders, and folders whose own name says they
    are still being uploaded (``JOB.partial``). A folder whose name is not valid UTF-8 is skipped too, and
    given to ``on_bad_name`` (the daemon says it once per name; the web pages scan several times a second and
    say nothing). A file (or a link) directly in the inbox with an ordinary name is no job: it is given to
    ``on_loose`` (it belongs in a job folder), unless it is a README explaining the inbox. A missing inbox raises
    FileNotFoundError (the share is not mounted: the caller should pause, not conclude the inbox is empty).
    """
    inbox = Path(inbox)
    found: list[Candidate] = []
    with os.scandir(inbox) as it:
        for entry in it:
            if not entry.is_dir(follow_symlinks=False):
                if (
                    on_loose is not None
                    and encodable_name(entry.name)
                    and plain_name(entry.name)
                    and not is_readme(entry.name)
                ):
                    on_loose(entry.name)
                continue
            if classify_name(entry.name, is_dir=True) is not NameKind.NORMAL:
                continue
            if not encodable_name(entry.name):
                if on_bad_name is not None:
                    on_bad_name(entry.name)
                continue
            if state_dir is not None and _same_path(Path(entry.path), Path(state_dir)):
                continue
            found.append(Candidate(name=entry.name, path=Path(entry.path)))
    return sorted(found, key=lambda c: c.name)


# ---------------------------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Snapshot:
    """What a job folder holds right now, to :data:`MAX_WALK_DEPTH` levels and :data:`MAX_WALK_ENTRIES` names, junk
    excluded.

    entries: (relative path, size, mtime_ns) of every ordinary file and (relative path/, 0, 0) of every
    ordinary folder, sorted (symlinks are recorded as entries too, never followed). in_flight: relative paths
    of in-flight names. has_marker: the ready marker is
    in the folder itself. has_files: at least one ordinary file. gone: the folder vanished while scanning.
    """

    entries: tuple[tuple[str, int, int], ...]
    in_flight: tuple[str, ...]
    has_marker: bool
    has_files: bool
    gone: bool = False
    newest_change_ns: int = 0
    """The newest mtime or ctime of the folder and anything in it (copies made with ``cp -p``, ``rsync -a``,
    Explorer or Finder keep old mtimes, but the ctime is when the file arrived)."""


MAX_WALK_DEPTH = 16
"""How many folder levels of a job the snapshot looks into. A job uses only the files directly in its folder; the
levels below are walked only so that a copy still running there delays readiness. A folder nested thousands deep
(anyone on the share can make one) costs no more than this."""

MAX_WALK_ENTRIES = 10_000
"""How many names of one job folder a snapshot records, level by level, each folder in name order, so the same
content always gives the same snapshot. A job is one audio and a few presenters: a folder of millions of files
must not make every scan slow and large."""


def take_snapshot(
    folder: Path,
    ready_marker: str = ".ready",
    *,
    max_depth: int = MAX_WALK_DEPTH,
    max_entries: int = MAX_WALK_ENTRIES,
) -> Snapshot:
    """Walk ``folder`` and record names, sizes and mtimes (see :class:`Snapshot`): breadth first, iteratively,
    at most ``max_depth`` levels and ``max_entries`` names (:data:`MAX_WALK_DEPTH`, :data:`MAX_WALK_ENTRIES`)."""
    entries: list[tuple[str, int, int]] = []
    in_flight: list[str] = []
    has_marker = False
    try:
        top = os.stat(folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return Snapshot(entries=(), in_flight=(), has_marker=False, has_files=False, gone=True)
    newest = max(top.st_mtime_ns, top.st_ctime_ns)  # a folder moved into the inbox: its ctime is the arrival
    pending: deque[tuple[str, str, int]] = deque([(str(folder), "", 0)])  # (folder, its relative prefix, depth)
    while pending and len(entries) < max_entries:
        directory, prefix, depth = pending.popleft()
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            if not prefix:
                return Snapshot(entries=(), in_flight=(), has_marker=False, has_files=False, gone=True)
            continue  # a sub-folder renamed or removed since it was listed: the next snapshot differs anyway
        for entry in children:
            if len(entries) >= max_entries:
                break
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not prefix and entry.name == ready_marker and not is_dir:
                    has_marker = True
                    continue
                kind = classify_name(entry.name, is_dir=is_dir)
                if kind is NameKind.IN_FLIGHT:
                    in_flight.append(rel)
                    continue
                if kind is NameKind.JUNK:
                    continue
                st = entry.stat(follow_symlinks=False)
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
                if is_dir:
                    entries.append((rel + "/", 0, 0))
                    if depth + 1 < max_depth:
                        pending.append((entry.path, rel + "/", depth + 1))
                else:
                    entries.append((rel, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                # Deleted or renamed between listing and stat (a producer renaming x.part -> x):
                # the next snapshot sees the new name; this one simply differs from it.
                continue
    return Snapshot(
        entries=tuple(sorted(entries)),
        in_flight=tuple(sorted(in_flight)),
        has_marker=has_marker,
        has_files=any(not rel.endswith("/") for rel, _, _ in entries),
        newest_change_ns=newest,
    )


class ReadyReason(enum.Enum):
    """Why a job folder is or is not ready."""

    MARKER = "marker"  # ready: the ready marker is present
    SETTLED = "settled"  # ready: nothing changed for settle_seconds
    TIMED_OUT = "timed_out"  # ready: incomplete files, but unchanged for incomplete_timeout: taken, they fail
    SETTLING = "settling"  # not yet: changed less than settle_seconds ago
    IN_FLIGHT = "in_flight"  # not yet: a temp/partial file says a copy is running
    INCOMPLETE = "incomplete"  # not yet: an audio or presenter file is not complete (see completeness)
    EMPTY = "empty"  # not yet: no ordinary file at all
    GONE = "gone"  # the folder disappeared (claimed by another process, or deleted)


@dataclass(frozen=True)
class Readiness:
    """The verdict on one job folder: ``ready``, the reason, the files it waits for, and seconds left to wait.

    in_flight: in-flight names seen. incomplete: ``"file: why"`` for each incomplete audio/presenter file.
    """

    reason: ReadyReason
    in_flight: tuple[str, ...] = ()
    incomplete: tuple[str, ...] = ()
    wait_s: float = 0.0

    @property
    def ready(self) -> bool:
        return self.reason in (ReadyReason.MARKER, ReadyReason.SETTLED, ReadyReason.TIMED_OUT)

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """What the job waits for, for the log and STATUS= (empty when it waits for nothing in particular)."""
        return self.in_flight + self.incomplete


@dataclass
class _Seen:
    entries: tuple[tuple[str, int, int], ...]
    since: float  # clock time from which these entries count as unchanged
    deadline: float | None = field(default=None)  # clock time the verdict may change without any file change


class ReadinessTracker:
    """Decides when job folders are completely copied, from successive snapshots.

    Holds, per candidate name, the last snapshot's entries and the clock time from which they count as
    unchanged. A change of any name, size or mtime restarts that job's settle timer. By default the timer
    starts at the first observation, so jobs found at start-up also wait ``settle_seconds`` (a clock on a NAS
    may be off). ``trust_file_times=True`` (``heygemd once``, which has no history) starts it at the newest
    mtime/ctime in the folder instead. ``completeness`` checks the media files of a settled job;
    ``incomplete_timeout`` (seconds, None = forever) ends the wait for files that never complete.
    ``clock`` is injectable (monotonic seconds); ``wall_clock`` is compared with file times.
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        ready_marker: str = ".ready",
        completeness: CompletenessCheck | None = None,
        incomplete_timeout: float | None = None,
        trust_file_times: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.ready_marker = ready_marker
        self.completeness = completeness
        self.incomplete_timeout = incomplete_timeout
        self.trust_file_times = trust_file_times
        self._clock = clock
        self._wall_clock = wall_clock
        self._seen: dict[str, _Seen] = {}

    def observe(self, candidate: Candidate) -> Readiness:
        """Snapshot ``candidate`` now and judge it."""
        snap = take_snapshot(candidate.path, self.ready_marker)
        return self.judge(candidate.name, snap, candidate.path)

    def judge(self, name: str, snap: Snapshot, folder: Path | None = None) -> Readiness:
        """Judge job ``name`` from a snapshot of ``folder`` taken now (updates its settle timer). Without
        ``folder`` (or a completeness check) the files' completeness is not looked at."""
        now = self._clock()
        if snap.gone:
            self._seen.pop(name, None)
            return Readiness(ReadyReason.GONE)
        seen = self._seen.get(name)
        if seen is None or seen.entries != snap.entries:
            since = now
            if seen is None and self.trust_file_times and snap.newest_change_ns:
                since = now - max(0.0, self._wall_clock() - snap.newest_change_ns / 1e9)
            seen = self._seen[name] = _Seen(entries=snap.entries, since=since)
        seen.deadline = None
        if snap.in_flight:
            return Readiness(ReadyReason.IN_FLIGHT, in_flight=snap.in_flight)
        if not snap.has_files:
            return Readiness(ReadyReason.EMPTY)
        if snap.has_marker:  # the uploader says the copy is complete: a file still broken fails with its own error
            return Readiness(ReadyReason.MARKER)
        unchanged = now - seen.since
        if unchanged < self.settle_seconds:
            seen.deadline = seen.since + self.settle_seconds
            return Readiness(ReadyReason.SETTLING, wait_s=self.settle_seconds - unchanged)
        incomplete = self.completeness.incomplete(folder, snap.entries) if self.completeness and folder else ()
        if incomplete:
            if self.incomplete_timeout is None or unchanged < self.incomplete_timeout:
                seen.deadline = None if self.incomplete_timeout is None else seen.since + self.incomplete_timeout
                left = float("inf") if seen.deadline is None else seen.deadline - now
                return Readiness(ReadyReason.INCOMPLETE, incomplete=incomplete, wait_s=left)
            return Readiness(ReadyReason.TIMED_OUT, incomplete=incomplete)
        return Readiness(ReadyReason.SETTLED)

    def forget(self, name: str) -> None:
        """Drop what is known about ``name`` (after claiming it)."""
        self._seen.pop(name, None)

    def retain(self, names: Iterable[str]) -> None:
        """Forget every job not in ``names`` (call with the current scan so removed folders do not linger)."""
        keep = set(names)
        for name in [n for n in self._seen if n not in keep]:
            del self._seen[name]

    def next_deadline(self) -> float | None:
        """Seconds until the earliest waiting job's verdict changes by time alone (settled, or timed out while
        incomplete), or None when none has such a deadline."""
        deadlines = [s.deadline for s in self._seen.values() if s.deadline is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())
