"""What heygemd knows of a job still in the inbox beyond its folder: who submitted it (an account of the web
server, the CLI) and its priority when an editor changed it. A note is a small file in the state folder,
``<state>/notes/<job name>``, never in the job folder, which everyone who can write the inbox can write; it is tied
to its folder by the folder's identity (device and inode, which a rename keeps), so a folder of the same name made
later by someone else does not inherit it. The claim moves what it says into the job's claim.json
(:func:`heygemd.daemon.claims.claim`) and removes it.

A folder copied into the inbox has no note: its submitter is ``nas <owner>``, the user who owns the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from heygemd.daemon.priority import Priority
from heygemd.errors import HeygemdError
from heygemd.fsutil import atomic_write_bytes, read_regular
from heygemd.layout import notes_root
from heygemd.names import plain_name

NOTE_MAX_BYTES = 16 * 1024
STALE_SECONDS = 3600.0
"""A note whose folder is no longer in the inbox is removed after this long (a young one may belong to a job being
renamed into the inbox right now)."""


class JobNote(BaseModel):
    """``<state>/notes/<job name>``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    folder: tuple[int, int]
    """The job folder's device and inode number."""
    submitted_by: str | None = None
    priority: Priority | None = None


def identity(folder: Path) -> tuple[int, int]:
    """A folder's device and inode number (kept by a rename; never followed through a link)."""
    st = os.lstat(folder)
    return st.st_dev, st.st_ino


def nas_submitter(folder: Path) -> str:
    """Who submitted a folder copied into the inbox: ``nas <owner>`` (the owner's name, or uid without one)."""
    try:
        uid = os.lstat(folder).st_uid
    except OSError:
        return "nas"
    try:
        return f"nas {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"nas {uid}"


def _path(state_dir: Path, name: str, *, create: bool) -> Path | None:
    if not plain_name(name, is_dir=True):
        return None
    return notes_root(state_dir, create=create) / name


def read_note(state_dir: Path, name: str, folder: Path) -> JobNote | None:
    """The note of the inbox job ``name`` whose folder is ``folder``, or None (none, unreadable, or another
    folder's)."""
    path = _path(state_dir, name, create=False)
    if path is None:
        return None
    try:
        note = JobNote.model_validate_json(read_regular(path, max_bytes=NOTE_MAX_BYTES))
        return note if note.folder == identity(folder) else None
    except (OSError, ValidationError, ValueError, HeygemdError):  # none, or not heygemd's: never followed
        return None


def write_note(
    state_dir: Path, name: str, folder: Path, *, submitted_by: str | None = None, priority: int | None = None
) -> JobNote:
    """Record ``submitted_by`` and/or ``priority`` for the job ``name`` whose folder is ``folder`` (what the note
    said before is kept where not given)."""
    path = _path(state_dir, name, create=True)
    if path is None:
        raise ValueError(f"{name!r} is not a job name")
    current = read_note(state_dir, name, folder)
    note = JobNote(
        folder=identity(folder),
        submitted_by=submitted_by if submitted_by is not None else (current.submitted_by if current else None),
        priority=priority if priority is not None else (current.priority if current else None),
    )
    atomic_write_bytes(path, note.model_dump_json().encode("utf-8") + b"\n")
    return note


def drop_note(state_dir: Path, name: str) -> None:
    """Remove the note of ``name`` (once the claim has taken it over)."""
    path = _path(state_dir, name, create=False)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def tidy_notes(state_dir: Path, inbox: Path, *, now: float | None = None) -> None:
    """Remove old notes whose folder is no longer in the inbox (the job was removed by hand)."""
    root = notes_root(state_dir, create=False)
    try:
        entries = list(os.scandir(root)) if not root.is_symlink() else []
    except (FileNotFoundError, NotADirectoryError):
        return
    now = time.time() if now is None else now
    for entry in entries:
        with contextlib.suppress(OSError):
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_SECONDS:
                continue
            folder = Path(inbox) / entry.name
            if read_note(state_dir, entry.name, folder) is None:
                os.unlink(entry.path)
