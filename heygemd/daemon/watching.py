"""Watching the inbox: inotify or polling (chosen from the mount table), turned into one "rescan" signal.

The inbox is polled where it is an NFS/SMB/CIFS/FUSE mount (inotify misses changes other machines make) or
when the mount table is unreadable, and watched with inotify elsewhere. Either way only two levels are watched:
the inbox itself and the top level of each folder in it (where a job's files and its ``.ready`` marker are), never
the sub-trees below, whatever their depth or size; links are never followed. An observer that cannot start
(the kernel's inotify limits, anything else) gives way to polling. The watcher carries no job knowledge: the
caller rescans the whole inbox on every signal and at least every rescan interval.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import warnings
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
from watchdog.observers.api import BaseObserver, ObservedWatch

from heygemd.names import NameKind, classify_name

# watchdog's inotify observer warns "Callback with id ... already exists for watch ..., it will be overwritten" when
# an emitter registers its callback on a watch that still holds one under the same id (ids are id() of emitters;
# seen when a watched job folder is claimed). What it keeps is the callback of the emitter registering now, the live
# one: nothing is lost, so it is no warning for an operator.
warnings.filterwarnings("ignore", message=r"Callback with id .* already exists", category=RuntimeWarning)

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

MAX_WATCHED_FOLDERS = 256
"""With inotify, at most this many folders of the inbox get a watch of their own (each costs an observer thread
and a kernel watch); a change in any others is seen by the rescan every ``intake.rescan_interval``."""


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
    and ``changed``, a threading.Event the caller waits on (:meth:`wait`). Two levels are watched: the inbox and
    the top level of each folder in it (with inotify, a non-recursive watch per folder, kept up to date as folders
    come and go; with polling, a walk that lists no deeper). It carries no job knowledge: the caller rescans the
    whole inbox on every signal and at least every rescan interval. Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        inbox: Path,
        *,
        state_dir: Path | None = None,
        observer: Literal["auto", "inotify", "polling"] = "auto",
        poll_interval: float = 10.0,
        mountinfo: str | None = None,
        also: tuple[Path, ...] = (),
    ) -> None:
        """``also``: folders whose own files are watched too, with the inbox's observer (the presenter library); one
        missing when watching starts is left to the rescan."""
        self.inbox = Path(inbox)
        self.also = tuple(os.path.realpath(folder) for folder in also)
        self.poll_interval = poll_interval
        self.choice = choose_observer(self.inbox, observer, mountinfo=mountinfo)
        self.changed = threading.Event()
        self._root = os.path.realpath(self.inbox)
        self._state_dir = os.path.realpath(state_dir) if state_dir is not None else None
        self._observer: BaseObserver | None = None
        self._handler = _Signal(self.changed, self._state_dir)
        self._folders: dict[str, ObservedWatch] = {}
        """With inotify: the inbox's folders watched on their own (top level only), by path."""

    @property
    def kind(self) -> ObserverKind:
        return self.choice.kind

    @property
    def running(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def _folder_entries(self) -> list[os.DirEntry[str]]:
        """The inbox's folders that may be jobs: not junk or dot folders, not the state dir, never links."""
        return [entry for entry in self._scandir(self._root) if entry.is_dir(follow_symlinks=False)]

    def _scandir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        """What polling lists: the inbox minus junk/dot folders and the state dir; in a folder of the inbox, its
        files only (its sub-folders are never walked, whatever their depth); a folder that cannot be listed,
        nothing (the rescan reports it)."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            return
        top = path == self._root
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and (
                not top
                or classify_name(entry.name, is_dir=True) is NameKind.JUNK
                or (self._state_dir is not None and os.path.realpath(entry.path) == self._state_dir)
            ):
                continue
            yield entry

    def start(self) -> "InboxWatcher":
        """Start watching. When inotify cannot start (its watch limit reached, or anything else), polling takes
        over and ``choice`` says why. Raises FileNotFoundError when the inbox does not exist."""
        if self._observer is not None:
            raise RuntimeError("InboxWatcher already started")
        if not self.inbox.is_dir():
            raise FileNotFoundError(errno.ENOENT, "inbox folder not found", str(self.inbox))
        if self.choice.kind == "inotify":
            try:
                self._observer = self._start_inotify()
                return self
            except (OSError, RecursionError) as exc:
                why = f"inotify failed ({type(exc).__name__}: {exc}): polling instead"
                self.choice = ObserverChoice("polling", self.choice.fstype, why)
        self._observer = self._start_polling()
        return self

    def _start_polling(self) -> BaseObserver:
        from watchdog.observers.polling import PollingObserverVFS

        # lstat: a link in the inbox is seen as the link it is, never walked into; "recursive" goes only as deep
        # as _scandir lists folders: the inbox's own, not those inside a job
        observer = PollingObserverVFS(os.lstat, self._scandir, polling_interval=self.poll_interval)
        observer.schedule(self._handler, self._root, recursive=True, event_filter=_WATCHED_EVENTS)
        self._watch_also(observer, recursive=True)  # _scandir lists only the files of a folder other than the inbox
        observer.start()
        return observer

    def _start_inotify(self) -> BaseObserver:
        from watchdog.observers import Observer

        observer = Observer()
        try:
            observer.schedule(self._handler, self._root, recursive=False, event_filter=_WATCHED_EVENTS)
            self._watch_also(observer, recursive=False)
            observer.start()
            self._follow_folders(observer)
        except BaseException:
            observer.stop()
            self._folders.clear()
            raise
        return observer

    def _watch_also(self, observer: BaseObserver, *, recursive: bool) -> None:
        for folder in self.also:
            if os.path.isdir(folder) and folder != self._root:
                observer.schedule(self._handler, folder, recursive=recursive, event_filter=_WATCHED_EVENTS)

    def _follow_folders(self, observer: BaseObserver) -> None:
        """With inotify: a watch (top level only) on each folder now in the inbox, none on folders gone."""
        current = {entry.path for entry in self._folder_entries()}
        for path in [p for p in self._folders if p not in current]:
            with contextlib.suppress(KeyError):  # its watch already ended with the folder
                observer.unschedule(self._folders.pop(path))
        for path in sorted(current - self._folders.keys()):
            if len(self._folders) >= MAX_WATCHED_FOLDERS:
                break
            try:
                self._folders[path] = observer.schedule(
                    self._handler, path, recursive=False, event_filter=_WATCHED_EVENTS
                )
            except OSError:  # gone meanwhile, or the kernel's watch limit: the rescan still sees it
                continue

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the observer and wait up to ``timeout`` seconds for its threads. Safe to call twice."""
        observer, self._observer = self._observer, None
        self._folders.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout)

    def wait(self, timeout: float | None) -> bool:
        """Block until a change is signalled or ``timeout`` passes; returns whether a change came. Clears it.
        With inotify, a change also brings the watches on the inbox's folders up to date (a new job folder is
        watched from then on; the caller's rescan sees what it held already)."""
        signalled = self.changed.wait(timeout)
        self.changed.clear()
        if signalled and self.choice.kind == "inotify" and self._observer is not None:
            self._follow_folders(self._observer)
        return signalled

    def __enter__(self) -> "InboxWatcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
