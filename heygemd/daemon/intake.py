"""Intake: which inbox entries are jobs, when a job folder is completely copied, and taking it out of the inbox.

The flow the worker drives::

    with InboxWatcher(inbox, state_dir=state) as watcher:        # inotify, or polling on NFS/SMB
        tracker = ReadinessTracker(settle_seconds=75)
        while running:
            for cand in scan_inbox(inbox, state):                # full rescan on every signal and on a timer
                if tracker.observe(cand).ready:
                    job = claim(cand, state, outbox=outbox)      # atomic rename; None if another process won
            watcher.wait(min(rescan_interval, tracker.next_deadline() or rescan_interval))

A job is ready when its ``.ready`` marker exists (at once), or when nothing in it changed for
``settle_seconds``; never while a file that means "copy in flight" is present, and never when it holds no
real file. Claimed jobs live in ``<state>/claimed/<job-id>/`` as ``claim.json`` plus ``input/`` (the user's
folder, renamed there whole); :func:`claimed_jobs` lists what a restart must resume.
"""

from __future__ import annotations

import enum
import errno
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from heygemd.daemon.status import atomic_write_bytes, fsync_dir, utc_now
from heygemd.errors import ConfigError

log = structlog.get_logger("heygemd.intake")

# ---------------------------------------------------------------------------------------------- name rules
#
# Two kinds of names besides ordinary files:
#
# IN_FLIGHT: a producer is still writing. Their presence means "the copy is not finished: wait", so they
#   block readiness of the job that holds them (and an inbox folder with such a name is not a job yet).
#   *.part / *.partial   browsers, rclone (name.XXXXXX.partial), wget, many copy tools
#   *.tmp                generic temp files; Syncthing's temp files end in .tmp too
#   *.crdownload         Chrome downloads
#   .syncthing.*         Syncthing temp file on Unix peers;   ~syncthing~*  on Windows peers
#   .~lock*              LibreOffice lock file: a document in the folder is open in an editor
#   ~$*                  MS Office owner file: a document in the folder is open in an editor
#
# JUNK: operating-system clutter that appears in any folder a desktop touched. It never blocks or counts:
#   .DS_Store, ._* (macOS AppleDouble, written next to each file copied to SMB), Thumbs.db, ehthumbs.db,
#   desktop.ini, and every other dotfile (hidden = not part of the job; this includes the .ready marker,
#   which is looked at separately). Junk directories are skipped with everything in them: Synology @eaDir,
#   __MACOSX, $RECYCLE.BIN, #recycle, System Volume Information, and dot dirs (.Trashes, .Spotlight-V100,
#   .fseventsd, .stfolder, .stversions, ...).
#
# Comparisons ignore case: Windows clients spell these with any case.

IN_FLIGHT_SUFFIXES: tuple[str, ...] = (".part", ".partial", ".tmp", ".crdownload")
IN_FLIGHT_PREFIXES: tuple[str, ...] = (".syncthing.", "~syncthing~", ".~lock", "~$")
JUNK_NAMES: frozenset[str] = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
JUNK_DIRS: frozenset[str] = frozenset(
    {"@eadir", "__macosx", "$recycle.bin", "#recycle", "#snapshot", "system volume information", "lost+found"}
)


class NameKind(enum.Enum):
    """What a file or folder name inside the inbox or a job folder means."""

    NORMAL = "normal"
    IN_FLIGHT = "in_flight"
    JUNK = "junk"


def classify_name(name: str, *, is_dir: bool = False) -> NameKind:
    """Classify one name (not a path) by the rules above. In-flight rules win over the dotfile rule."""
    low = name.casefold()
    if low.endswith(IN_FLIGHT_SUFFIXES) or low.startswith(IN_FLIGHT_PREFIXES):
        return NameKind.IN_FLIGHT
    if low.startswith(".") or low in JUNK_NAMES:
        return NameKind.JUNK
    if is_dir and low in JUNK_DIRS:
        return NameKind.JUNK
    return NameKind.NORMAL


# ---------------------------------------------------------------------------------------------- scanning


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


def encodable_name(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 (a name from an old system in another encoding is not)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_inbox(inbox: Path, state_dir: Path | None = None) -> list[Candidate]:
    """The job folders directly under ``inbox``, sorted by name.

    Skipped: files, symlinks, the state directory, dot/junk folders, and folders whose own name says they
    are still being uploaded (``JOB.partial``). A missing inbox raises FileNotFoundError (the share is not
    mounted: the caller should pause, not conclude the inbox is empty).
    """
    inbox = Path(inbox)
    found: list[Candidate] = []
    with os.scandir(inbox) as it:
        for entry in it:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if classify_name(entry.name, is_dir=True) is not NameKind.NORMAL:
                continue
            if not encodable_name(entry.name):
                log.warning("inbox.bad_name", folder=os.fsencode(entry.name).decode("utf-8", "replace"),
                            hint="The folder name is not valid UTF-8; rename it to take it as a job.")
                continue
            if state_dir is not None and _same_path(Path(entry.path), Path(state_dir)):
                continue
            found.append(Candidate(name=entry.name, path=Path(entry.path)))
    return sorted(found, key=lambda c: c.name)


# ---------------------------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Snapshot:
    """What a job folder holds right now, recursively, junk excluded.

    entries: (relative path, size, mtime_ns) of every ordinary file and (relative path/, 0, 0) of every
    ordinary folder, sorted. in_flight: relative paths of in-flight names. has_marker: the ready marker is
    in the folder itself. has_files: at least one ordinary file. gone: the folder vanished while scanning.
    """

    entries: tuple[tuple[str, int, int], ...]
    in_flight: tuple[str, ...]
    has_marker: bool
    has_files: bool
    gone: bool = False


def take_snapshot(folder: Path, ready_marker: str = ".ready") -> Snapshot:
    """Walk ``folder`` and record names, sizes and mtimes (see :class:`Snapshot`)."""
    entries: list[tuple[str, int, int]] = []
    in_flight: list[str] = []
    has_marker = False

    def walk(directory: str, prefix: str) -> None:
        nonlocal has_marker
        with os.scandir(directory) as it:
            children = list(it)
        for entry in children:
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
                if is_dir:
                    entries.append((rel + "/", 0, 0))
                    walk(entry.path, rel + "/")
                else:
                    st = entry.stat(follow_symlinks=False)
                    entries.append((rel, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                # Deleted or renamed between listing and stat (a producer renaming x.part -> x):
                # the next snapshot sees the new name; this one simply differs from it.
                continue

    try:
        walk(str(folder), "")
    except (FileNotFoundError, NotADirectoryError):
        return Snapshot(entries=(), in_flight=(), has_marker=False, has_files=False, gone=True)
    return Snapshot(
        entries=tuple(sorted(entries)),
        in_flight=tuple(sorted(in_flight)),
        has_marker=has_marker,
        has_files=any(not rel.endswith("/") for rel, _, _ in entries),
    )


class ReadyReason(enum.Enum):
    """Why a job folder is or is not ready."""

    MARKER = "marker"  # ready: the ready marker is present
    SETTLED = "settled"  # ready: nothing changed for settle_seconds
    SETTLING = "settling"  # not yet: changed less than settle_seconds ago
    IN_FLIGHT = "in_flight"  # not yet: a temp/partial file says a copy is running
    EMPTY = "empty"  # not yet: no ordinary file at all
    GONE = "gone"  # the folder disappeared (claimed by another process, or deleted)


@dataclass(frozen=True)
class Readiness:
    """The verdict on one job folder: ``ready``, the reason, the in-flight files seen, and seconds left to settle."""

    reason: ReadyReason
    in_flight: tuple[str, ...] = ()
    wait_s: float = 0.0

    @property
    def ready(self) -> bool:
        return self.reason in (ReadyReason.MARKER, ReadyReason.SETTLED)


@dataclass
class _Seen:
    entries: tuple[tuple[str, int, int], ...]
    since: float  # clock time these entries were first seen
    settling: bool = False  # the last verdict was SETTLING (only those have a deadline)


class ReadinessTracker:
    """Decides when job folders are completely copied, from successive snapshots.

    Holds, per candidate name, the last snapshot's entries and the clock time they were first seen. A change
    of any name, size or mtime restarts that job's settle timer. The timer starts at the first observation,
    so jobs found at start-up also wait ``settle_seconds`` (a folder half-copied before a crash looks
    unchanged to a fresh process). ``clock`` is injectable (monotonic seconds).
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        ready_marker: str = ".ready",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.ready_marker = ready_marker
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def observe(self, candidate: Candidate) -> Readiness:
        """Snapshot ``candidate`` now and judge it."""
        return self.judge(candidate.name, take_snapshot(candidate.path, self.ready_marker))

    def judge(self, name: str, snap: Snapshot) -> Readiness:
        """Judge job ``name`` from a snapshot taken now (updates its settle timer)."""
        now = self._clock()
        if snap.gone:
            self._seen.pop(name, None)
            return Readiness(ReadyReason.GONE)
        seen = self._seen.get(name)
        if seen is None or seen.entries != snap.entries:
            seen = self._seen[name] = _Seen(entries=snap.entries, since=now)
        seen.settling = False
        if snap.in_flight:
            return Readiness(ReadyReason.IN_FLIGHT, in_flight=snap.in_flight)
        if not snap.has_files:
            return Readiness(ReadyReason.EMPTY)
        if snap.has_marker:
            return Readiness(ReadyReason.MARKER)
        left = self.settle_seconds - (now - seen.since)
        if left <= 0:
            return Readiness(ReadyReason.SETTLED)
        seen.settling = True
        return Readiness(ReadyReason.SETTLING, wait_s=left)

    def forget(self, name: str) -> None:
        """Drop what is known about ``name`` (after claiming it)."""
        self._seen.pop(name, None)

    def retain(self, names: Iterable[str]) -> None:
        """Forget every job not in ``names`` (call with the current scan so removed folders do not linger)."""
        keep = set(names)
        for name in [n for n in self._seen if n not in keep]:
            del self._seen[name]

    def next_deadline(self) -> float | None:
        """Seconds until the earliest settling job could become ready, or None when none is settling."""
        settling = [s.since for s in self._seen.values() if s.settling]
        if not settling:
            return None
        return max(0.0, self.settle_seconds - (self._clock() - min(settling)))


# ---------------------------------------------------------------------------------------------- observer choice

ObserverKind = Literal["inotify", "polling"]

NETWORK_FSTYPES: frozenset[str] = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "smb2", "9p", "ceph", "afs", "ncpfs", "lustre", "gpfs", "glusterfs",
     "virtiofs", "vboxsf", "vmhgfs", "davfs", "sshfs"}
)
"""Filesystems where inotify misses changes made by other machines (plus every ``fuse``/``fuse.*`` type)."""

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: where it is mounted, the filesystem type and the source."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (``id parent maj:min root mountpoint opts [optional...] - fstype source sopts``)."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]) if len(tail) > 1 else ""))
    return mounts


def find_mount(path: Path, mounts: Iterable[Mount]) -> Mount | None:
    """The mount that holds ``path`` (longest mount point that is ``path`` or a parent of it; later wins ties,
    as a later mount on the same point hides the earlier one)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    best_len = -1
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if mp == "/" or target == mp or target.startswith(mp + "/"):
            if len(mp) >= best_len:
                best, best_len = m, len(mp)
    return best


def is_network_fstype(fstype: str) -> bool:
    return fstype in NETWORK_FSTYPES or fstype == "fuse" or fstype.startswith("fuse.") or fstype == "fuseblk"


@dataclass(frozen=True)
class ObserverChoice:
    """Which observer watches the inbox, and why (for logs and ``heygemd check``)."""

    kind: ObserverKind
    fstype: str | None
    reason: str


def choose_observer(
    inbox: Path, setting: Literal["auto", "inotify", "polling"] = "auto", *, mountinfo: str | None = None
) -> ObserverChoice:
    """Pick inotify or polling for ``inbox``. ``auto`` polls on network/FUSE filesystems, where inotify does
    not see changes other machines make, and when the mount table cannot be read. ``mountinfo`` is the text
    of /proc/self/mountinfo (read from the system when None)."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            mountinfo = ""
    mount = find_mount(inbox, parse_mountinfo(mountinfo)) if mountinfo else None
    fstype = mount.fstype if mount else None
    if setting != "auto":
        return ObserverChoice(setting, fstype, f"intake.observer = {setting}")
    if mount is None:
        return ObserverChoice("polling", None, "mount table unreadable: polling is the safe choice")
    if is_network_fstype(mount.fstype):
        return ObserverChoice("polling", fstype, f"inbox is on {fstype} ({mount.mount_point}): inotify misses remote changes")
    return ObserverChoice("inotify", fstype, f"inbox is on local {fstype} ({mount.mount_point})")


# ---------------------------------------------------------------------------------------------- watching

_WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent,
]  # not opened/closed-no-write: reading the inbox must not wake the loop that reads it


class _Signal(FileSystemEventHandler):
    """Sets ``changed`` on any event outside the excluded folder (the state dir, where heygemd itself writes)."""

    def __init__(self, changed: threading.Event, exclude: str | None) -> None:
        self._changed = changed
        self._exclude = exclude

    def _excluded(self, p: str | bytes) -> bool:
        p = os.fsdecode(p)
        return bool(self._exclude) and (p == self._exclude or p.startswith(self._exclude + os.sep))

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        if all(self._excluded(p) for p in paths):
            return
        self._changed.set()


class InboxWatcher:
    """Watches the inbox with watchdog and turns every change into one signal: "something changed: rescan".

    Holds the observer choice (``choice.kind``: inotify or polling, and why), the running watchdog observer,
    and ``changed``, a threading.Event the caller waits on (:meth:`wait`). It carries no job knowledge: the
    caller rescans the whole inbox on every signal and at least every rescan interval. Use as a context
    manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        inbox: Path,
        *,
        state_dir: Path | None = None,
        observer: Literal["auto", "inotify", "polling"] = "auto",
        poll_interval: float = 10.0,
        mountinfo: str | None = None,
    ) -> None:
        self.inbox = Path(inbox)
        self.poll_interval = poll_interval
        self.choice = choose_observer(self.inbox, observer, mountinfo=mountinfo)
        self.changed = threading.Event()
        self._state_dir = os.path.realpath(state_dir) if state_dir is not None else None
        self._observer: BaseObserver | None = None
        self._auto = observer == "auto"

    @property
    def kind(self) -> ObserverKind:
        return self.choice.kind

    @property
    def running(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def _scandir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        """os.scandir minus junk/dot folders and the state dir, so polling never walks archives or caches."""
        with os.scandir(path) as it:
            entries = list(it)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and (
                classify_name(entry.name, is_dir=True) is NameKind.JUNK
                or (self._state_dir is not None and os.path.realpath(entry.path) == self._state_dir)
            ):
                continue
            yield entry

    def _make_observer(self, kind: ObserverKind) -> BaseObserver:
        if kind == "polling":
            from watchdog.observers.polling import PollingObserverVFS

            return PollingObserverVFS(os.stat, self._scandir, polling_interval=self.poll_interval)
        from watchdog.observers import Observer

        return Observer()

    def start(self) -> "InboxWatcher":
        """Start watching (recursively). With ``auto``, an inotify start failure (watch limit reached) falls back
        to polling and says so in ``choice``. Raises FileNotFoundError when the inbox does not exist."""
        if self._observer is not None:
            raise RuntimeError("InboxWatcher already started")
        if not self.inbox.is_dir():
            raise FileNotFoundError(errno.ENOENT, "inbox folder not found", str(self.inbox))
        handler = _Signal(self.changed, self._state_dir)
        try:
            observer = self._start(self.choice.kind, handler)
        except OSError as exc:
            if not (self._auto and self.choice.kind == "inotify"):
                raise
            self.choice = ObserverChoice("polling", self.choice.fstype, f"inotify failed ({exc}): polling instead")
            observer = self._start("polling", handler)
        self._observer = observer
        return self

    def _start(self, kind: ObserverKind, handler: _Signal) -> BaseObserver:
        observer = self._make_observer(kind)
        observer.schedule(handler, os.path.realpath(self.inbox), recursive=True, event_filter=_WATCHED_EVENTS)
        observer.start()
        return observer

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the observer and wait up to ``timeout`` seconds for its threads. Safe to call twice."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)

    def wait(self, timeout: float | None) -> bool:
        """Block until a change is signalled or ``timeout`` passes; returns whether a change came. Clears it."""
        signalled = self.changed.wait(timeout)
        self.changed.clear()
        return signalled

    def __enter__(self) -> "InboxWatcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- claiming

CLAIMED = "claimed"
CLAIM_FILE = "claim.json"
INPUT_DIR = "input"


class ClaimRecord(BaseModel):
    """``claim.json``: who took which inbox folder when, so a restart knows the job's identity and order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    name: str
    claimed_at: AwareDatetime
    host: str
    pid: int


@dataclass(frozen=True)
class ClaimedJob:
    """A job taken out of the inbox.

    path: ``<state>/claimed/<job_id>`` (holds claim.json); folder: ``path/input``, the user's job folder
    (pass it to ``load_job``); name: the folder's original name; claimed_at: UTC.
    """

    job_id: str
    name: str
    path: Path
    claimed_at: datetime
    host: str
    pid: int

    @property
    def folder(self) -> Path:
        return self.path / INPUT_DIR

    @property
    def state_dir(self) -> Path:
        return self.path.parent.parent


def _reserve(claimed_root: Path, name: str, outbox: Path | None) -> tuple[str, Path]:
    """Atomically create ``claimed/<id>`` for the first free id among name, name-2, name-3...

    An id is taken when ``claimed/<id>`` exists (mkdir fails: that is the atomic reservation, also between
    processes) or ``outbox/<id>`` exists (an earlier job's results, never overwritten).
    """
    n = 1
    while True:
        job_id = name if n == 1 else f"{name}-{n}"
        n += 1
        if outbox is not None and (outbox / job_id).exists():
            continue
        try:
            (claimed_root / job_id).mkdir()
        except FileExistsError:
            continue
        return job_id, claimed_root / job_id


def _release(reservation: Path) -> None:
    (reservation / CLAIM_FILE).unlink(missing_ok=True)
    reservation.rmdir()


def claim(
    candidate: Candidate,
    state_dir: Path,
    *,
    outbox: Path | None = None,
    now: Callable[[], datetime] = utc_now,
) -> ClaimedJob | None:
    """Take ``candidate`` out of the inbox by renaming it to ``<state>/claimed/<job-id>/input``.

    Steps: reserve a unique job id (mkdir), write claim.json there (atomic), rename the folder (atomic,
    never a copy). Returns None when the folder is gone, i.e. another process claimed it first; of several
    racers exactly one wins. Raises ConfigError when the state dir is on another filesystem (EXDEV); any
    other rename error (e.g. EACCES on SMB while a client holds a file in the folder open) is raised as is,
    after releasing the reservation: the folder stays in the inbox and a later scan tries again.
    """
    claimed_root = Path(state_dir) / CLAIMED
    claimed_root.mkdir(parents=True, exist_ok=True)
    job_id, reservation = _reserve(claimed_root, candidate.name, Path(outbox) if outbox is not None else None)
    record = ClaimRecord(job_id=job_id, name=candidate.name, claimed_at=now(), host=socket.gethostname(), pid=os.getpid())
    try:
        atomic_write_bytes(reservation / CLAIM_FILE, record.model_dump_json(indent=2).encode("utf-8"))
        os.rename(candidate.path, reservation / INPUT_DIR)
    except FileNotFoundError:
        _release(reservation)
        return None
    except OSError as exc:
        _release(reservation)
        if exc.errno == errno.EXDEV:
            raise ConfigError(
                f"cannot claim job by rename: {claimed_root} is on another filesystem than {candidate.path}",
                path=claimed_root,
                hint="Put paths.state on the inbox's share (the default <inbox>/.heygemd is); jobs are never copied.",
            ) from exc
        raise
    fsync_dir(claimed_root)
    fsync_dir(candidate.path.parent)
    return ClaimedJob(job_id, candidate.name, reservation, record.claimed_at, record.host, record.pid)


def read_claim(path: Path) -> ClaimedJob | None:
    """The claimed job at ``<state>/claimed/<id>``, or None when it is only a reservation (no ``input/``:
    a claim that lost its race or was cut short by a crash). A missing or unreadable claim.json is rebuilt
    from the folder name and its mtime, so a job is never lost over its bookkeeping."""
    path = Path(path)
    if not (path / INPUT_DIR).is_dir():
        return None
    try:
        rec = ClaimRecord.model_validate_json((path / CLAIM_FILE).read_bytes())
    except (FileNotFoundError, ValidationError):
        st = path.stat()
        return ClaimedJob(path.name, path.name, path, datetime.fromtimestamp(st.st_mtime, timezone.utc), "", 0)
    return ClaimedJob(rec.job_id, rec.name, path, rec.claimed_at, rec.host, rec.pid)


def claimed_jobs(state_dir: Path) -> list[ClaimedJob]:
    """Every job claimed but not yet finished (not moved out of ``claimed/``), oldest claim first."""
    root = Path(state_dir) / CLAIMED
    if not root.is_dir():
        return []
    jobs = [job for p in root.iterdir() if p.is_dir() and (job := read_claim(p)) is not None]
    return sorted(jobs, key=lambda j: (j.claimed_at, j.job_id))


def remove_stale_reservations(state_dir: Path, *, older_than_s: float = 3600.0, now: float | None = None) -> list[Path]:
    """Delete reservations (``claimed/<id>`` without ``input/``) older than ``older_than_s``: left by a crash
    between reserving and renaming. Young ones are left alone, another process may be mid-claim."""
    root = Path(state_dir) / CLAIMED
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    for p in root.iterdir():
        if p.is_dir() and not (p / INPUT_DIR).exists() and now - p.stat().st_mtime >= older_than_s:
            shutil.rmtree(p)
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------- ownership

LEASE_SECONDS = 600.0
"""A claim held by a process on another machine is taken over only when its claim.json has not been touched
(``renew_lease``) for this long: that daemon is gone. On this machine, whether its pid is alive decides."""


def renew_lease(claimed: ClaimedJob) -> None:
    """Touch claim.json: "the job is being worked on", for daemons on other machines sharing the inbox."""
    os.utime(claimed.path / CLAIM_FILE)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def held_elsewhere(claimed: ClaimedJob, *, now: float | None = None, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether another live process (here or on another machine) is working on ``claimed`` right now."""
    if claimed.host == socket.gethostname():
        return claimed.pid != os.getpid() and _pid_alive(claimed.pid)
    if not claimed.host:  # claim.json was lost: nobody can be identified as its owner
        return False
    try:
        touched = (claimed.path / CLAIM_FILE).stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - touched < lease_seconds


def take_over(claimed: ClaimedJob) -> ClaimedJob:
    """Record this process as the owner of ``claimed`` (same id, name and claim time) before resuming it."""
    record = ClaimRecord(job_id=claimed.job_id, name=claimed.name, claimed_at=claimed.claimed_at,
                         host=socket.gethostname(), pid=os.getpid())
    atomic_write_bytes(claimed.path / CLAIM_FILE, record.model_dump_json(indent=2).encode("utf-8"))
    return ClaimedJob(record.job_id, record.name, claimed.path, record.claimed_at, record.host, record.pid)
