"""The per-presenter preparation cache: what an engine derives from the presenter video alone (MuseTalk: the
VAE latents of every source frame), stored next to the face-track cache and keyed the same way (video content
+ a fingerprint of everything that shapes it), so the same presenter with a new audio skips that work.

One ``.npy`` file per presenter under ``<cache>/presenter/``, written under a temporary name and renamed when
complete, read back memory-mapped (a long video's latents never sit in RAM at once). The folder is kept under a
size limit: after each write the least recently used files (by modification time, refreshed on every hit) are
removed until the total fits; files a caller pins (:func:`pin`: the presenter library's) go only when the others are
not enough. A cache that cannot be written does not fail the video: the preparation is kept
in an anonymous temporary file for this render only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from heygemd.errors import ConfigError, HeygemdError
from heygemd.fsutil import atomic_write_bytes, fd_path, open_regular, own_dir, read_regular

log = structlog.get_logger(__name__)

FOLDER = "presenter"
"""Sub-folder of the cache directory (the face tracks live in ``faces/``)."""
PINS_FILE = "pinned.txt"
"""In ``presenter/``: the names of the files evicted only when the others are not enough (one per line)."""
MAX_PINS_BYTES = 4 << 20


@dataclass(frozen=True, eq=False)
class Preparation:
    """One presenter's per-frame preparation, (frames, *shape) float32, read-only and usually memory-mapped."""

    data: np.ndarray
    cached: bool
    """True when it came from the cache (nothing was computed)."""
    path: Path | None = None
    """Its file in the cache (None when the cache could not be written: an anonymous file for this render only)."""


def fingerprint(**spec: object) -> str:
    """16 hex characters naming everything that shapes a preparation (values must be JSON-representable)."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_path(key: str, cache_dir: Path, fp: str) -> Path:
    return cache_dir / FOLDER / f"{key}-{fp}.npy"


def cached_preparation(
    key: str,
    cache_dir: Path,
    fp: str,
    shape: tuple[int, ...],
    compute: Callable[[np.ndarray], None],
    limit_bytes: int,
) -> Preparation:
    """The cached preparation of video ``key`` with fingerprint ``fp``, or ``compute(out)`` filling a new one.

    ``shape`` is the whole array's shape (frames first); ``compute`` writes every row of the writable float32
    ``out`` it is given. A cache file of another shape, or unreadable, is logged and recomputed.
    """
    path = cache_path(key, cache_dir, fp)
    try:
        own_dir(cache_dir, FOLDER)  # never a link: nothing is read or written outside the cache
    except (OSError, ConfigError) as exc:
        log.warning("presenter_cache_write_failed", path=str(path.parent), error=str(exc))
        return Preparation(_uncached(shape, compute), cached=False)
    if os.path.lexists(path):
        try:
            data = _load(path, shape)
            if data is not None:
                return Preparation(data, cached=True, path=path)
        except (OSError, ValueError, EOFError, HeygemdError) as exc:  # a link or FIFO planted there too
            log.warning("presenter_cache_corrupt", path=str(path), error=str(exc))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        log.warning("presenter_cache_write_failed", path=str(path), error=str(exc))
        return Preparation(_uncached(shape, compute), cached=False)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        compute(out)
        out.flush()
        del out
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full or the like: this render still gets its preparation
        log.warning("presenter_cache_write_failed", path=str(path), error=str(exc))
        return Preparation(_uncached(shape, compute), cached=False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    evict(cache_dir, limit_bytes, keep=path)
    written = _load(path, shape)
    assert written is not None  # the file just written
    return Preparation(written, cached=False, path=path)


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache file ``path`` mapped read-only, its time set to now (most recently used); None (logged) when it
    is not float32 of ``shape``. Opened once, never through a link (``fsutil.open_regular``): the cache folder may
    be on the share, where anyone may put a link where a file goes."""
    fd = open_regular(path)
    try:
        data = np.load(fd_path(fd), mmap_mode="r", allow_pickle=False)  # maps the very file opened
        if data.shape != shape or data.dtype != np.float32:
            log.warning("presenter_cache_mismatch", path=str(path), shape=list(data.shape), expected=list(shape))
            return None
        os.utime(fd)
        return data
    finally:
        os.close(fd)


def _uncached(shape: tuple[int, ...], compute: Callable[[np.ndarray], None]) -> np.ndarray:
    backing = tempfile.TemporaryFile(prefix="heygemd-presenter-")
    out = np.memmap(backing, dtype=np.float32, mode="w+", shape=shape)
    compute(out)
    return out


def pin(cache_dir: Path, names: Iterable[str]) -> None:
    """Pin the preparations named ``names`` (file names in ``presenter/``, as ``Preparation.path.name``): from now
    on :func:`evict` removes them only when the unpinned ones are not enough; a name left out is unpinned."""
    folder = own_dir(cache_dir, FOLDER)
    text = "".join(f"{name}\n" for name in sorted(set(names)) if name and "/" not in name and "\n" not in name)
    atomic_write_bytes(folder / PINS_FILE, text.encode("utf-8"))


def pinned(cache_dir: Path) -> frozenset[str]:
    """The names :func:`pin` pinned (none when the list is missing or unreadable: nothing is pinned then)."""
    try:
        text = read_regular(cache_dir / FOLDER / PINS_FILE, max_bytes=MAX_PINS_BYTES).decode("utf-8", "replace")
    except (OSError, HeygemdError):
        return frozenset()
    return frozenset(line for line in text.splitlines() if line)


def evict(cache_dir: Path, limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used preparations until the folder holds at most ``limit_bytes``: the unpinned
    ones first (:func:`pin`), then, when those are not enough, the pinned ones.

    ``keep`` (the one just written) is never removed. Returns the removed files.
    """
    folder = cache_dir / FOLDER
    keep_too = pinned(cache_dir)
    entries: list[tuple[bool, float, int, Path]] = []
    for path in folder.glob("*.npy"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # another process evicted it
            continue
        entries.append((path.name in keep_too, stat.st_mtime, stat.st_size, path))
    total = sum(size for _, _, size, _ in entries)
    removed: list[Path] = []
    for _, _, size, path in sorted(entries):
        if total <= limit_bytes:
            break
        if keep is not None and path == keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        total -= size
        removed.append(path)
    if removed:
        log.info("presenter_cache_evicted", files=len(removed), limit_bytes=limit_bytes)
    return removed
