"""Putting a job into the inbox the way a careful NAS user does: build it in a staging folder the intake never
looks at (``<state>/uploads/<random>/``, inside the inbox's hidden state folder, so on the inbox's filesystem),
create the ready marker last, then one rename into ``inbox/<job>/``. A failed upload only ever leaves its
staging folder, which is removed at once (or, after a crash, by ``clean_stale``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import unicodedata
from pathlib import Path

from heygemd.errors import DiskFull
from heygemd.fsutil import NO_SPACE_ERRNOS, fsync_dir, remove_tree
from heygemd.layout import claim_folder, job_folder, uploads_root
from heygemd.names import NameKind, classify_name, make_windows_safe, numbered, plain_name
from heygemd.web.problems import BadUpload

STALE_SECONDS = 24 * 3600.0
MAX_NAME_BYTES = 180


def plain_basename(raw: str) -> str:
    """``raw`` reduced to a plain file name: the last path component, NFC, no control characters, no leading
    dots (a hidden name is never part of a job), at most MAX_NAME_BYTES bytes, one a Windows client can open
    (``names.make_windows_safe``). '' when nothing is left."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or len(suffix) > 10:
            stem, suffix = name, ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return make_windows_safe(name)


def safe_basename(raw: str) -> str:
    """An uploaded file's name as it is stored (``plain_basename``); BadUpload for the names of files still
    being copied or of system clutter, which are never part of a job."""
    name = plain_basename(raw)
    if name and classify_name(name) is not NameKind.NORMAL:
        raise BadUpload(
            f"the name {raw!r} is reserved for files still being copied or for system clutter",
            hint="Rename the file (names like *.part, *.tmp, ~$*, Thumbs.db are never part of a job).",
        )
    return name


def job_name(requested: str, audio: str) -> str:
    """An uploaded job's folder name: the requested name, else the audio file's stem, else ``job``, each reduced
    by ``plain_basename``. A name the intake would pass over (``__MACOSX``, ``lost+found``, ``#recycle``,
    ``*.part``, ...: ``names.plain_name``) is never used: such a job would wait in the inbox for ever."""
    for raw in (requested, Path(audio).stem):
        name = plain_basename(raw)
        if plain_name(name, is_dir=True):
            return name
    return "job"


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


def publish(staging: Path, *, name: str, inbox: Path, outbox: Path, state_dir: Path, tail: str = "") -> str:
    """Rename ``staging`` into the inbox as the first free job name among name<tail>, name<tail>-2, ... (``name``
    cut to fit, :func:`heygemd.names.numbered`; free in the inbox, the claim folder and the outbox, so the daemon
    gives the job this very id). Returns the job id.

    The name is reserved with mkdir (an empty folder is never a job), then the staging folder is renamed over
    it in one step: the intake sees nothing, or the whole job with its ready marker.
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
            os.rename(staging, target)
        except OSError:
            target.rmdir()
            raise
        fsync_dir(inbox)
        return job_id
