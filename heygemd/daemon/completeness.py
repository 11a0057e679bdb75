"""Whether the audio and presenter files of a settled job folder are complete, or still being uploaded.

A settle time alone is not enough: ``smbclient`` from a slow source keeps a file at 0 bytes for the whole
upload and then writes it at once; Windows clients set the final size first and fill it in (zeros until
then); a client on a flaky VPN stalls for minutes. A media file counts as incomplete when:

* it has 0 bytes, or its first bytes are all zeros (a preallocated file not filled in yet) and ffprobe finds no
  stream in it (an MP3 may well start with zero padding);
* it is an MP4/MOV (ISO media: ``names.MP4_FAMILY_SUFFIXES``) that starts like one, and a top-level box runs
  past the end of the file, its index (``moov``) is missing, or ffprobe cannot read its streams (a duration is
  not asked for: a cover picture alone has none);
* a local process holds it open for writing (Samba included, when heygemd runs on the file server): a
  ``fcntl(F_SETLEASE, F_RDLCK)`` read lease is refused with EAGAIN then. The lease works only on files this
  process owns (or with CAP_LEASE); EACCES/EINVAL/ENOTSUP mean "cannot tell" and the probe is skipped.

A file that ffprobe reads completely is complete. The content checks (zeros, boxes, ffprobe) run once per
unchanged file (path, size, mtime); the lease probe is cheap and runs every time, as "open for writing" changes
without the file changing. None of this holds back a job with its ready marker: the uploader said it is complete
(see ``readiness``).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from heygemd.errors import DecodeError, NotRegularFile, ToolMissing, UnsafePath
from heygemd.fsutil import InputFile
from heygemd.names import is_audio, is_mp4_family, is_presenter
from heygemd.pipeline.ffmpeg_argv import ffprobe_command
from heygemd.pipeline.ffmpeg_tools import run_probe
from heygemd.pipeline.probe import MP4_FIRST_BOXES, top_level_atoms

ZERO_HEAD_BYTES = 4096
"""A media file whose first this many bytes are all zeros is a preallocated file not yet filled in."""

LEASE_UNAVAILABLE_ERRNOS: frozenset[int] = frozenset({errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOTSUP})

ProbeFn = Callable[[Path], str | None]
"""A content check: None when the file looks complete, else why it does not."""


def open_for_writing(path: Path) -> bool | None:
    """Whether a local process has ``path`` open for writing (True/False), or None when this cannot be told
    (a file of another user without CAP_LEASE, a filesystem without leases, e.g. NFS or SMB clients)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return True
        if exc.errno in LEASE_UNAVAILABLE_ERRNOS:
            return None
        raise
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def content_problem(path: Path) -> str | None:
    """Why the content of ``path`` looks unfinished, or None (see the module docstring). It is read through one
    descriptor (:meth:`InputFile.open`): a link, FIFO or device put there since the scan is never read or waited
    for (None: not a copy in progress; the job, or the library, refuses it with its own error)."""
    try:
        opened = InputFile.open(path)
    except (UnsafePath, NotRegularFile):
        return None
    with opened as media:
        return _content_problem(media)


def _content_problem(media: InputFile) -> str | None:
    size = media.size()
    if size == 0:
        return "0 bytes so far"
    head = media.read_at(0, ZERO_HEAD_BYTES)
    if not head.strip(b"\0"):
        return None if _readable(media) else "only zeros so far"
    if not (is_mp4_family(media.path) and len(head) >= 8 and head[4:8] in MP4_FIRST_BOXES):
        return None  # not ISO media (or not an MP4 at all: it fails later as NOT_MEDIA)
    atoms = top_level_atoms(media)
    for name, offset, box_size in atoms:
        if box_size < 8 or offset + box_size > size:
            return f"its '{name}' box needs {offset + box_size} bytes, {size} so far"
    if not any(name == "moov" for name, _, _ in atoms):
        return "no index ('moov' box) yet"
    return None if _readable(media) else "its streams are not readable yet"


def _readable(media: InputFile) -> bool:
    """Whether ffprobe opens ``media`` without an error and finds at least one stream in it (True when ffprobe is
    missing: that cannot be told here; the job fails with TOOL_MISSING and its fix, and heygemd check says so)."""
    try:
        argv = ffprobe_command(media.url, ["-show_entries", "stream=codec_type", "-of", "csv=p=0"])
    except ToolMissing:
        return True
    try:
        result = run_probe(argv, media.path, timeout=60.0, pass_fds=media.pass_fds)
    except DecodeError:  # ffprobe hung (a stalled share): not readable yet
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


class CompletenessCheck:
    """Finds the incomplete media files of a job folder; content checks are cached per unchanged file.

    ``content`` and ``lease`` are injectable (tests); ``lease=None`` turns the write-lease probe off.
    """

    def __init__(
        self,
        *,
        content: ProbeFn = content_problem,
        lease: Callable[[Path], bool | None] | None = open_for_writing,
    ) -> None:
        self._content = content
        self._lease = lease
        self._cache: dict[str, tuple[int, int, str | None]] = {}

    def incomplete(self, folder: Path, entries: Iterable[tuple[str, int, int]]) -> tuple[str, ...]:
        """``"name: why"`` for each audio or presenter file directly in ``folder`` that is not complete.
        ``entries`` are the folder's snapshot entries (relative path, size, mtime_ns)."""
        found: list[str] = []
        keep: set[str] = set()
        for rel, size, mtime_ns in entries:
            path = Path(folder) / rel
            if "/" in rel or not (is_audio(path) or is_presenter(path)) or path.is_symlink():
                continue  # sub-folders are ignored by the job; links are refused by it, never read
            key = str(path)
            keep.add(key)
            cached = self._cache.get(key)
            if cached is not None and cached[:2] == (size, mtime_ns):
                why = cached[2]
            else:
                try:
                    why = self._content(path)
                except FileNotFoundError:
                    continue  # renamed away since the snapshot: the next snapshot differs anyway
                except PermissionError:
                    why = None  # unreadable for heygemd: not an upload in progress; the job names it when it fails
                self._cache[key] = (size, mtime_ns, why)
            if why is None and self._lease is not None and self._lease(path):
                why = "open for writing by another program"
            if why is not None:
                found.append(f"{rel}: {why}")
        self.forget(folder, keep=keep)
        return tuple(found)

    def forget(self, folder: Path, *, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Drop the cached checks of files in ``folder`` (all, or all but ``keep``)."""
        prefix = str(folder) + os.sep
        for key in [k for k in self._cache if k.startswith(prefix) and k not in keep]:
            del self._cache[key]
