"""Watching the inbox: inotify or polling (chosen from the mount table), turned into one "rescan" signal.

The inbox is polled where it is an NFS/SMB/CIFS/FUSE mount (inotify misses changes other machines make) or
when the mount table is unreadable, and watched with inotify elsewhere. The watcher carries no job
knowledge: the caller rescans the whole inbox on every signal and at least every rescan interval.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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

from heygemd.names import NameKind, classify_name

ObserverKind = Literal["inotify", "polling"]

NETWORK_FSTYPES: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "9p",
        "ceph",
        "afs",
        "ncpfs",
        "lustre",
        "gpfs",
        "glusterfs",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "davfs",
        "sshfs",
    }
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
        why = f"inbox is on {fstype} ({mount.mount_point}): inotify misses remote changes"
        return ObserverChoice("polling", fstype, why)
    return ObserverChoice("inotify", fstype, f"inbox is on local {fstype} ({mount.mount_point})")


# ---------------------------------------------------------------------------------------------- watching

_WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
]  # not opened/closed-no-write: reading the inbox must not wake the loop that reads it


class _Signal(FileSystemEventHandler):
    """Sets ``changed`` on any event outside the excluded folder (the state dir, where heygemd itself writes)."""

    def __init__(self, changed: threading.Event, exclude: str | None) -> None:
        self._changed = changed
        self._exclude = exclude

    def _excluded(self, p: str | bytes) -> bool:
        if not self._exclude:
            return False
        path = os.fsdecode(p)
        return path == self._exclude or path.startswith(self._exclude + os.sep)

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
