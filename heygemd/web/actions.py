"""What the dashboard's buttons do besides reading and cancelling (``heygemd.control``): retry failed videos,
delete a job.

Retry submits a NEW inbox job (named ``<job>-retry``, or -retry-2 ...)
holding the original audio, the presenters whose videos failed or were cancelled, and the original job.toml,
copied from the archived inputs; the original job is left as it is. Delete removes the job's outbox folder and its
archived inputs, each renamed into a trash folder first and then removed (symlinks are removed, never followed).
Neither retry nor delete acts on a job that is queued or rendering. When another request deletes the job while
a retry copies its inputs or a delete moves it, the loser answers JOB_CHANGED and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from heygemd import layout
from heygemd.daemon.jobs import JOB_TOML
from heygemd.daemon.outbox import archived_inputs
from heygemd.daemon.status import FINISHED_JOB_STATES, JobStatus
from heygemd.fsutil import fsync_dir, own_dir, remove_tree
from heygemd.names import fit_name, plain_name
from heygemd.settings import Settings
from heygemd.web.catalog import Catalog
from heygemd.web.problems import InputsGone, JobBusy, JobChanged, NothingToRetry
from heygemd.web.staging import discard, disk_full, is_disk_full, mark_ready, new_staging, publish

RETRIED = frozenset({"failed", "cancelled"})
"""The videos a retry submits again."""


def _require_finished(status: JobStatus) -> None:
    if status.state not in FINISHED_JOB_STATES:
        raise JobBusy(f"job {status.job_id!r} is {status.state}")


def _copy_regular(src: Path, dst: Path) -> None:
    """Copy one regular file without following a symlink (a symlink in the inputs is refused)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise InputsGone(f"{src.name} in the archived inputs is not a regular file", path=None)
        with open(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())


def retry(settings: Settings, catalog: Catalog, job_id: str) -> str:
    """Submit the failed (or cancelled) videos of ``job_id`` again as a new job; returns the new job's id."""
    status = catalog.status(job_id)
    _require_finished(status)
    failed = [v.input for v in status.videos if v.state in RETRIED]
    if not failed:
        raise NothingToRetry(f"job {job_id!r} has no failed or cancelled video")
    folder = archived_inputs(settings.paths.state_dir, status)
    if folder is None or status.audio is None:
        raise InputsGone(f"the inputs of job {job_id!r} are not in the archive")
    inputs = layout.inputs(folder)
    if inputs.is_symlink():
        raise InputsGone(f"the archived inputs of job {job_id!r} are a symlink; they are not followed")
    names = [status.audio.file, *failed] + ([JOB_TOML] if (inputs / JOB_TOML).is_file() else [])
    missing = [n for n in names if not plain_name(n) or not (inputs / n).is_file()]
    if missing:
        raise InputsGone(f"archived inputs of job {job_id!r} lack {', '.join(missing)}")
    staging = new_staging(settings.paths.state_dir)
    try:
        for name in names:
            try:
                _copy_regular(inputs / name, staging / name)
            except FileNotFoundError:
                raise JobChanged(
                    f"the archived inputs of job {job_id!r} went away while they were copied for the retry; "
                    "nothing was queued"
                ) from None
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full(f"{job_id}/{name}") from None
                raise
        mark_ready(staging, settings.intake.ready_marker)
        return publish(
            staging,
            name=status.job_name,
            tail="-retry",
            inbox=settings.paths.inbox,
            outbox=settings.paths.outbox,
            state_dir=settings.paths.state_dir,
        )
    except BaseException:
        discard(staging)
        raise


def _trash(folder: Path, trash: Path) -> None:
    """Rename ``folder`` into ``trash`` (same filesystem), then remove it; a crash in between leaves only trash."""
    target = own_dir(trash) / fit_name(folder.name, f".{secrets.token_hex(4)}")
    os.rename(folder, target)
    fsync_dir(folder.parent)
    remove_tree(target)


def delete(settings: Settings, catalog: Catalog, job_id: str) -> None:
    """Remove a finished job: its outbox folder and its archived inputs."""
    status = catalog.status(job_id)
    _require_finished(status)
    folder = catalog.job_dir(job_id)
    inputs = archived_inputs(settings.paths.state_dir, status)
    try:
        if inputs is not None:
            _trash(inputs, layout.trash_root(settings.paths.state_dir))
        _trash(folder, layout.outbox_trash(settings.paths.outbox))
    except FileNotFoundError:
        raise JobChanged(f"job {job_id!r} was deleted by another request meanwhile") from None


def empty_outbox_trash(outbox: Path) -> None:
    """Finish deletes a crash interrupted."""
    trash = layout.outbox_trash(outbox)
    if trash.is_dir() and not trash.is_symlink():
        for folder in trash.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    remove_tree(folder)
            else:
                folder.unlink(missing_ok=True)
