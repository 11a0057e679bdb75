"""Atomic publish, in one place: write under a temporary name, fsync, rename into place, fsync the folder; the
one way to open a file a job supplies (:func:`open_regular`); and heygemd's own folders (:func:`own_dir`,
:func:`own_subdirs`, :func:`remove_tree`), where a link is never followed.

Readers (people on an SMB share, ``heygemd status``, the web pages) see the old file or the new one, never a
half-written one. Every file heygemd publishes goes through here: status.json, claim.json, encoded outputs,
posters and face tracks. Temporary names come from :func:`heygemd.names.temp_path`, so a kill between
writing and renaming leaves a name that :func:`remove_temps` recognises and removes later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from heygemd.errors import ConfigError, FileTooLarge, NotRegularFile, UnsafePath
from heygemd.names import is_heygemd_temp, temp_path

RETRYABLE_REPLACE_ERRNOS: frozenset[int] = frozenset(
    {errno.EACCES, errno.EPERM, errno.EBUSY, errno.ETXTBSY, errno.EAGAIN, errno.EIO, errno.ESTALE}
)
"""Errors ``os.replace`` gives on SMB while a Windows client holds the target open (or on a flaky NAS)."""

NO_SPACE_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Errors of a write that found the filesystem (or the user's quota) full."""

DIR_FSYNC_REFUSALS: frozenset[int] = frozenset({errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EACCES, errno.EPERM})
"""Errors of fsync on a folder from filesystems that cannot do it (some network shares): the rename already
happened, so they are accepted."""

ReplaceFn = Callable[[str | os.PathLike[str], str | os.PathLike[str]], None]


def fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename in it is durable; tolerant of shares that refuse it (see DIR_FSYNC_REFUSALS)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in DIR_FSYNC_REFUSALS:
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file someone else wrote (ffmpeg), by path."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def publish(
    temp: Path,
    final: Path,
    *,
    attempts: int = 6,
    backoff_s: float = 0.05,
    replace: ReplaceFn = os.replace,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Rename the complete, fsynced ``temp`` over ``final`` and fsync the folder.

    A retryable error of ``replace`` (SMB refuses it while a client has ``final`` open) is retried up to
    ``attempts`` times, waiting ``backoff_s``, doubling each time; then the last error is raised. ``temp`` is
    left for the caller to remove on failure.
    """
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            replace(temp, final)
            break
        except OSError as exc:
            if exc.errno not in RETRYABLE_REPLACE_ERRNOS or attempt == attempts:
                raise
            sleep(delay)
            delay *= 2
    fsync_dir(final.parent)


@contextmanager
def atomic_writer(final: Path, **publish_options: object) -> Iterator[BinaryIO]:
    """Write ``final`` atomically: the with-block writes to the yielded binary file (a temp file next to
    ``final``); on normal exit it is fsynced and published, on an exception removed. The file is never
    written in place."""
    final = Path(final)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, final, **publish_options)  # type: ignore[arg-type]
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: Path,
    data: bytes,
    *,
    attempts: int = 6,
    backoff_s: float = 0.05,
    replace: ReplaceFn = os.replace,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer` and :func:`publish`)."""
    with atomic_writer(Path(path), attempts=attempts, backoff_s=backoff_s, replace=replace, sleep=sleep) as fh:
        fh.write(data)


def publish_written(temp: Path, final: Path) -> None:
    """Publish a temp file another process wrote (ffmpeg): fsync it, then :func:`publish`."""
    fsync_file(temp)
    publish(temp, final)


def remove_temps(folder: Path, *, min_age_s: float = 0.0, now: float | None = None) -> list[Path]:
    """Remove heygemd's own temporary files directly in ``folder`` (only names :func:`heygemd.names.is_heygemd_temp`
    recognises; a link is removed itself, never its target). Returns what was removed. A missing folder is fine;
    a ``folder`` that is itself a link is not looked into.

    ``min_age_s``: leave temps modified more recently than this (a folder other processes may write in, such
    as the shared face cache); 0 removes all (a job's own folders, while this process holds the job).
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return removed
        with os.scandir(folder) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_heygemd_temp(entry.name) or entry.is_dir(follow_symlinks=False):
            continue
        try:
            if min_age_s and now - entry.stat(follow_symlinks=False).st_mtime < min_age_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return removed


# ---------------------------------------------------------------------------------------------- reading a job's files

_FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path, *, max_bytes: int | None = None, dir_fd: int | None = None) -> int:
    """Open a file that a job folder (or a request) supplies, once, and return the descriptor.

    Never through a symbolic link (``O_NOFOLLOW``: :class:`UnsafePath` naming where it points), never blocking on
    a FIFO or device (``O_NONBLOCK``), and only a regular file by ``fstat`` of what was opened
    (:class:`NotRegularFile` naming what it is), at most ``max_bytes`` long (:class:`FileTooLarge`). The caller
    reads through the descriptor (a child process through :func:`fd_path`), so nothing swapped in under the
    same name afterwards is read. FileNotFoundError passes through. The caller closes the descriptor.
    With ``dir_fd`` (a folder opened by the caller), the file ``path.name`` in that folder is opened, and ``path``
    is only what errors call it.
    """
    name = Path(path).name if dir_fd is not None else path
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = os.readlink(name, dir_fd=dir_fd)
            raise UnsafePath(f"is a symbolic link to {target}; it is not followed", path=path) from None
        if exc.errno == errno.ENXIO:  # a socket
            raise NotRegularFile("is a socket, not a regular file", path=path) from None
        raise
    try:
        info = os.fstat(fd)
        for test, kind in _FILE_KINDS:
            if test(info.st_mode):
                raise NotRegularFile(f"is {kind}, not a regular file", path=path)
        if max_bytes is not None and info.st_size > max_bytes:
            raise FileTooLarge(f"is {info.st_size:,} bytes; at most {max_bytes:,} are read", path=path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, *, max_bytes: int, dir_fd: int | None = None) -> bytes:
    """The whole content of a small file a job supplies, opened by :func:`open_regular` (in the folder ``dir_fd``,
    when given); never more than ``max_bytes`` are read, even from a file that grows while it is read."""
    fd = open_regular(path, max_bytes=max_bytes, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"grew past {max_bytes:,} bytes while it was read", path=path)
    return data


def fd_path(fd: int) -> str:
    """The name under which a child process started with ``pass_fds=(fd,)`` opens the very file behind ``fd``
    (ffmpeg and ffprobe take it as an input); whatever is at the original path by then does not matter."""
    return f"/proc/self/fd/{fd}"


# ---------------------------------------------------------------------------------------------- heygemd's own folders

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (made if missing, never through a link) for the block: one holder at a time,
    across processes (``flock``); released when the block ends, or the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def real_folder(path: Path) -> Iterator[int]:
    """``path`` opened as a folder itself, never through a link (a link: NotADirectoryError), for opening files in
    it (``dir_fd``): a folder swapped for a link once it is open is not read through."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a folder itself, not a link to one (False when it cannot be looked at)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: Path) -> bool:
    """Whether ``path`` is a regular file itself, not a link to one (False when it cannot be looked at)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def contained(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to somewhere inside ``root``."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _own(path: Path, *, parents: bool) -> Path:
    try:
        path.mkdir(parents=parents)
    except FileExistsError:
        pass
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise ConfigError(
            f"is a symbolic link to {os.readlink(path)}; heygemd never follows a link where it keeps its own folders",
            path=path,
            hint="Remove the link: heygemd creates the folder itself. To keep heygemd's files elsewhere, set "
            "paths.state or paths.cache.",
        )
    if not stat.S_ISDIR(mode):
        raise ConfigError(
            "is not a folder; heygemd keeps its own files there",
            path=path,
            hint="Remove or rename it: heygemd creates the folder itself.",
        )
    return path


def own_dir(root: Path, *names: str) -> Path:
    """``root/names[0]/names[1]/...`` as a folder of heygemd's own (the state folder and its sub-folders, the
    cache): ``root`` and each level below it created when missing, and each a real folder, never a symbolic link
    (:class:`ConfigError` naming where the link points), so nothing heygemd keeps there lands outside it.
    Returns the deepest folder. Every state sub-folder is made and checked here, by its users, right before use."""
    folder = _own(Path(root), parents=True)
    for name in names:
        folder = _own(folder / name, parents=False)
    return folder


def own_subdirs(root: Path, *names: str) -> list[Path]:
    """The real sub-folders (never links) of heygemd's own folder ``root/names...``, sorted; none when that folder
    is missing, or it or a level above it up to ``root`` is a link or not a folder (it is never walked into)."""
    levels = [Path(root)]
    for name in names:
        levels.append(levels[-1] / name)
    for level in levels:
        try:
            if not stat.S_ISDIR(os.lstat(level).st_mode):
                return []
        except (FileNotFoundError, NotADirectoryError):
            return []
    try:
        with os.scandir(levels[-1]) as it:
            return sorted(Path(entry.path) for entry in it if entry.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):  # gone meanwhile (a delete running at the same time)
        return []


def _unlink_all_but_folders(fd: int) -> list[str]:
    """Unlink every entry of the folder open as ``fd`` that is not a folder (links included: never followed);
    return the names of its sub-folders."""
    folders: list[str] = []
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
            continue
        try:
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            pass
    return folders


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything in it, at any depth, never following a symbolic link (a link given as
    ``path`` is removed itself). A missing ``path`` is fine.

    Not ``shutil.rmtree``: in Python 3.11 it recurses once per level and a folder nested ~1000 deep (any user of
    the share can make one in a job) raises RecursionError. This walks with one open folder at a time, by
    descriptor (so no path grows past PATH_MAX and a folder swapped for a link is never entered: ``O_NOFOLLOW``),
    going back up through ``..`` and checking that it arrives where it came from.
    """
    path = Path(path)
    parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = -1
    try:
        try:
            fd = os.open(path.name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            os.unlink(path.name, dir_fd=parent_fd)  # a link or a file: itself, never what it points to
            return
        info = os.fstat(fd)
        chain: list[tuple[str, tuple[int, int], list[str]]] = [
            (path.name, (info.st_dev, info.st_ino), _unlink_all_but_folders(fd))
        ]
        while chain:
            name, _ident, pending = chain[-1]
            if pending:
                sub = pending.pop()
                try:
                    child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    os.unlink(sub, dir_fd=fd)  # swapped for a link or a file since it was listed
                    continue
                os.close(fd)
                fd = child
                info = os.fstat(fd)
                chain.append((sub, (info.st_dev, info.st_ino), _unlink_all_but_folders(fd)))
                continue
            chain.pop()
            if not chain:
                os.close(fd)
                fd = -1
                os.rmdir(name, dir_fd=parent_fd)
                return
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = up
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != chain[-1][1]:
                raise OSError(errno.ESTALE, "a folder was moved away while it was being removed", str(path))
            os.rmdir(name, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(parent_fd)


class InputFile:
    """A file a job supplies, opened once (:func:`open_regular`) and from then on read only through that descriptor.

    ``path`` names it as the user knows it (errors name it); ``url`` is what a child process started with
    ``pass_fds=input.pass_fds`` opens to read this very file (ffmpeg's ``-i``, ffprobe); ``read_at`` and ``size``
    read it here. Whatever is put at ``path`` after the open (another file, a link to one outside the job) is never
    read. Use it as a context manager, or ``close`` it.
    """

    def __init__(self, path: Path, fd: int):
        self.path = Path(path)
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> "InputFile":
        """Open ``path`` with :func:`open_regular` (a link, FIFO, device, socket or folder is refused)."""
        return cls(Path(path), open_regular(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def url(self) -> str:
        return fd_path(self.fd)

    @property
    def pass_fds(self) -> tuple[int]:
        return (self.fd,)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read_at(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset``, fewer only where the file ends."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            part = os.pread(self.fd, size - got, offset + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "InputFile":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InputFile({str(self.path)!r}, fd={self.fd})"


def input_path(source: Path | InputFile) -> Path:
    """The file as the user knows it, whether it is given opened or by its path (errors name it)."""
    return source.path if isinstance(source, InputFile) else Path(source)
