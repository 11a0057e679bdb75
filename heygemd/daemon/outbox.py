"""The outbox side of a job: a folder of its own for the results, and what happens to the inputs afterwards.

``outbox/<job-id>/`` holds the outputs, posters, status.json and job.log of one job. A folder is only
reused for the same claim (a restart resuming the job); a folder that belongs to another job, or holds
files of unknown origin, is never written into: the job gets ``<job-id>-2`` and so on.

Once the outputs are safe, the claimed inputs (``<state>/claimed/<job-id>``) are archived to
``<state>/archive/<YYYY-MM-DD>/<job-id>`` (pruned after the retention time), deleted, or kept in
``<state>/kept/<job-id>`` (never pruned). Either way they leave ``claimed/``, so a restart does not resume them.
Each of these state folders is checked to be a real folder before use (``fsutil.own_dir``), and links in them
are never walked into: nothing is moved or deleted outside the state folder.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pydantic import ValidationError

from heygemd.daemon.claims import ClaimedJob, read_claim_record
from heygemd.daemon.status import JobStatus, read_status, utc_now
from heygemd.errors import HeygemdError
from heygemd.fsutil import fsync_dir, remove_tree
from heygemd.layout import (
    archive_day,
    archive_days,
    finished_claims,
    job_folder,
    kept_root,
    status_file,
    trash_folders,
    trash_root,
)
from heygemd.names import free_path, numbered
from heygemd.settings import InputsAfter

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _belongs_to(folder: Path, job_id: str, claimed_at: datetime) -> bool:
    """Whether ``folder`` is free for this job: empty, or its status.json is this very claim."""
    if not any(folder.iterdir()):
        return True
    try:
        status = read_status(status_file(folder))
    except (FileNotFoundError, ValueError):  # gone, or not this job's status (a link, a FIFO, foreign)
        return False
    return status.job_id == job_id and status.claimed is not None and status.claimed == claimed_at


def outbox_dir_for(outbox: Path, job_id: str, claimed_at: datetime) -> Path:
    """Create (or find again, on resume) the outbox folder of the job claimed as ``job_id`` at ``claimed_at``.

    ``outbox/<job_id>`` when it is new, empty, or its status.json has this job_id and claim time (the worker
    must write ``claimed`` into status.json); otherwise the first free ``<job_id>-2``, ``-3``... The folder
    is created with mkdir, so two daemons never get the same one.
    """
    outbox = Path(outbox)
    outbox.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        n += 1
        folder = job_folder(outbox, numbered(job_id, n, keep_suffix=False))
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            if folder.is_dir() and _belongs_to(folder, job_id, claimed_at):
                return folder


def inputs_destination(claimed: ClaimedJob, inputs_after: InputsAfter, *, now: datetime | None = None) -> Path | None:
    """Where :func:`finish_inputs` moves ``claimed``'s folder: ``<state>/archive/<day>/<id>`` or ``<state>/kept/<id>``
    (the first free name; the day folder is made), None when the inputs are deleted. A worker asks before it moves
    them, so that status.json can say where a failed job's files are kept."""
    now = now or utc_now()
    if inputs_after == "delete":
        return None
    if inputs_after == "archive":
        parent = archive_day(claimed.state_dir, now.astimezone(timezone.utc).strftime("%Y-%m-%d"))
    elif inputs_after == "keep":
        parent = kept_root(claimed.state_dir)
    else:
        raise ValueError(f"inputs_after must be archive, delete or keep, not {inputs_after!r}")
    return free_path(parent / claimed.job_id)


def finish_inputs(
    claimed: ClaimedJob, inputs_after: InputsAfter, *, now: datetime | None = None, target: Path | None = None
) -> Path | None:
    """Move a finished job's claimed folder out of ``claimed/`` according to ``inputs_after``
    (``settings.outbox.inputs_after``). Call only once the outputs and status.json are written.

    Returns where the inputs went (None when deleted): ``target`` when given (what :func:`inputs_destination`
    said), else its answer now. Moves are renames within the state dir. A state folder that is a link raises
    ConfigError (``fsutil.own_dir``) and the inputs stay claimed.
    """
    if inputs_after == "delete":
        # Rename out of claimed/ first (atomic), then delete: a kill halfway through the delete must not leave a
        # half-emptied job in claimed/ for the next start to "resume". empty_trash() finishes such a delete.
        trashed = free_path(trash_root(claimed.state_dir) / claimed.job_id)
        claimed.path.rename(trashed)
        fsync_dir(claimed.path.parent)
        remove_tree(trashed)
        return None
    target = target if target is not None else inputs_destination(claimed, inputs_after, now=now)
    assert target is not None
    claimed.path.rename(target)
    fsync_dir(target.parent)
    fsync_dir(claimed.path.parent)
    return target


def empty_trash(state_dir: Path) -> None:
    """Finish deletes that a kill interrupted (see ``finish_inputs``)."""
    for folder in trash_folders(state_dir):
        try:
            remove_tree(folder)
        except OSError:  # what a share holds open now goes at the next start
            continue


def prune_archive(state_dir: Path, retention_days: float, now: datetime | None = None) -> list[Path]:
    """Delete archive day folders whose whole day lies more than ``retention_days`` before ``now``.

    ``retention_days`` 0 keeps everything. Only real folders named YYYY-MM-DD are touched. Returns what was removed.
    """
    if retention_days <= 0:
        return []
    now = now or utc_now()
    removed: list[Path] = []
    for day_dir in archive_days(state_dir):
        if not _DATE_DIR.match(day_dir.name):
            continue
        try:
            day = date.fromisoformat(day_dir.name)
        except ValueError:
            continue
        day_end = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
        if now - day_end >= timedelta(days=retention_days):
            remove_tree(day_dir)
            removed.append(day_dir)
    return removed


def archived_inputs(state_dir: Path, status: JobStatus) -> Path | None:
    """The claim folder ``<state>/archive/<day>/<id>`` (or ``kept/<id>``) whose claim.json is the claim of the job
    ``status`` describes (None when its inputs were deleted or pruned). Its ``input/`` holds the inputs."""
    for folder in finished_claims(state_dir, status.job_id):
        try:
            record = read_claim_record(folder)
        except (OSError, ValidationError, HeygemdError):  # a link or a FIFO there is never followed nor waited on
            continue
        if record.job_id == status.job_id and (status.claimed is None or record.claimed_at == status.claimed):
            return folder
    return None
