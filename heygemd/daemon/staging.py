"""Putting a job into the inbox the way a careful NAS user does, for whoever submits through ``heygemd.control``
(the web upload, a retry): build it in a staging folder the intake never looks at (``<state>/uploads/<random>/``,
inside the inbox's hidden state folder, so on the inbox's filesystem), create the ready marker last, then one
rename into ``inbox/<job>/``. A failed upload only ever leaves its staging folder, which is removed at once (or,
after a crash, by ``clean_stale``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from heygemd.errors import DiskFull
from heygemd.fsutil import NO_SPACE_ERRNOS, fsync_dir, remove_tree
from heygemd.layout import claim_folder, job_folder, uploads_root
from heygemd.names import numbered

STALE_SECONDS = 24 * 3600.0


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in NO_SPACE_ERRNOS


def disk_full(what: str) -> DiskFull:
    return DiskFull(
        f"no space left on the inbox's filesystem while storing {what}; nothing was queued",
        hint="Free space on the inbox share (or raise its quota), then submit the job again.",
    )


def new_staging(state_dir: Path) -> Path:
    """A fresh, empty staging folder under ``<state>/uploads``."""
    try:
        root = uploads_root(state_dir)
        folder = root / secrets.token_hex(8)
        folder.mkdir()
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full("the upload") from None
        raise
    return folder


def discard(staging: Path) -> None:
    """Remove a staging folder and what it holds (never following symlinks)."""
    with contextlib.suppress(OSError):  # what a share holds open goes with clean_stale later
        remove_tree(staging)


def clean_stale(state_dir: Path, older_than_s: float = STALE_SECONDS) -> None:
    """Remove staging folders a crash left behind (only old ones: another server may be uploading now)."""
    root = uploads_root(state_dir, create=False)
    if root.is_symlink() or not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        try:
            if now - folder.lstat().st_mtime >= older_than_s:
                discard(folder)
        except FileNotFoundError:
            continue


def mark_ready(staging: Path, marker: str) -> None:
    """Create the ready marker: the last file written into a staging folder."""
    try:
        (staging / marker).touch()
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full("the ready marker") from None
        raise
    fsync_dir(staging)


def _taken(name: str, inbox: Path, outbox: Path, state_dir: Path) -> bool:
    return any(os.path.lexists(p) for p in (inbox / name, job_folder(outbox, name), claim_folder(state_dir, name)))


def publish(
    staging: Path,
    *,
    name: str,
    inbox: Path,
    outbox: Path,
    state_dir: Path,
    tail: str = "",
    before_rename: Callable[[str], None] = lambda _job_id: None,
) -> str:
    """Rename ``staging`` into the inbox as the first free job name among name<tail>, name<tail>-2, ... (``name``
    cut to fit, :func:`heygemd.names.numbered`; free in the inbox, the claim folder and the outbox, so the daemon
    gives the job this very id). Returns the job id.

    The name is reserved with mkdir (an empty folder is never a job), ``before_rename(job_id)`` is called (to note
    who submitted the job before the intake can see it), then the staging folder is renamed over it in one step:
    the intake sees nothing, or the whole job with its ready marker.
    """
    inbox.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        job_id = numbered(name, n, keep_suffix=False, tail=tail)
        n += 1
        if _taken(job_id, inbox, outbox, state_dir):
            continue
        target = inbox / job_id
        try:
            target.mkdir()
        except FileExistsError:
            continue
        try:
            before_rename(job_id)
            os.rename(staging, target)
        except BaseException:
            target.rmdir()
            raise
        fsync_dir(inbox)
        return job_id
