"""Cancelling a job: the request file, how the worker notices it, and what ``heygemd cancel`` and the web do.

One mechanism, on a single host and in a farm: a cancel is a request file, ``cancel.json``, in the job's claim
folder (``<state>/claimed/<id>/``, on the inbox's share that every farm host mounts; it exists from the claim
until the job has finished, and it moves with the inputs to the archive). The worker that runs the job checks it
between batches of frames (:class:`CancelWatch`, its ``should_stop``), stops the render through the same path a
SIGTERM takes (no output left under its final name, no ffmpeg left running), keeps the videos already done and
writes the job as ``cancelled``. A worker that takes a job whose request is already there (a farm task still
queued, a claimed job resumed after a restart) finishes it as cancelled without starting it.

A job still in the inbox is cancelled at once by whoever asks: it is claimed (the same atomic rename as the
intake's, so of the two exactly one wins) and finished as cancelled. So is a claimed job that provably nobody
runs, where the caller can prove it (``finish_idle``: in a farm, by taking the job's lock in Redis, as a worker
does; ``heygemd.farm.cancel``, handed in from above through ``heygemd.control``). Either way the inputs end in the
archive, as a failed job's do, so the job can be retried.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import structlog
from pydantic import ValidationError

from heygemd.daemon.claims import ClaimedJob, claim, first_status, read_claim
from heygemd.daemon.hooks import JobEnded, no_job_ended, tell_job_ended
from heygemd.daemon.jobs import MAX_JOB_TOML_BYTES, JobOptions, JobSpec, load_job
from heygemd.daemon.outbox import finish_inputs, outbox_dir_for
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.status import (
    FINISHED_JOB_STATES,
    AudioStatus,
    CancelStatus,
    JobStatus,
    VideoStatus,
    read_status,
    utc_now,
    write_status,
)
from heygemd.errors import AlreadyFinished, CancelRefused, HeygemdError, JobNotFound
from heygemd.fsutil import atomic_write_bytes, read_regular, remove_temps
from heygemd.layout import cancel_file, claim_folder, job_folder, log_file, status_file
from heygemd.logs import job_log
from heygemd.names import plain_name

log = structlog.get_logger("heygemd.cancel")

REQUEST_MAX_BYTES = 64 * 1024
"""A cancel request is a few hundred bytes; a larger file is not read (it still counts as a request)."""
CHECK_INTERVAL_S = 0.25
"""Longest a running job goes without looking for its cancel request (a stat on the share, so not every frame)."""


def requested_by(via: str) -> str:
    """Who asks, for the request and the logs: ``<via> <user>@<host>``, e.g. ``cli anna@gpu-2``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{via} {user}@{socket.gethostname()}"


def read_request(claim_path: Path) -> CancelStatus | None:
    """The job's cancel request, or None when there is none. A request file that cannot be parsed (cut short on a
    share; or not a plain file: it is never followed nor blocked on) still is a request: it is dated by its
    mtime."""
    path = cancel_file(claim_path)
    try:
        return CancelStatus.model_validate_json(read_regular(path, max_bytes=REQUEST_MAX_BYTES))
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError, HeygemdError):
        try:
            mtime = path.lstat().st_mtime
        except FileNotFoundError:
            return None
        return CancelStatus(requested=datetime.fromtimestamp(mtime, timezone.utc), by="")


def write_request(claim_path: Path, by: str) -> CancelStatus:
    """Write the request file into the claim folder (atomically). FileNotFoundError when the folder is gone: the job
    has just finished."""
    request = CancelStatus(requested=utc_now(), by=by)
    folder = Path(claim_path)
    if not folder.is_dir():
        raise FileNotFoundError(2, "the claim folder is gone", str(folder))
    atomic_write_bytes(cancel_file(folder), request.model_dump_json(indent=2).encode("utf-8"))
    return request


class CancelWatch:
    """True once the job's cancel request exists; looks at the file at most every ``interval`` seconds. The worker
    joins it to its stop flag, so the render stops at its next batch."""

    def __init__(
        self, claim_path: Path, *, interval: float = CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = cancel_file(claim_path)
        self.interval = interval
        self.clock = clock
        self.seen = False
        self._next = 0.0

    def __call__(self) -> bool:
        if not self.seen and self.clock() >= self._next:
            self._next = self.clock() + self.interval
            self.seen = self.path.exists()
        return self.seen

    def check_now(self) -> bool:
        self._next = 0.0
        return self()


def cancelled_videos(videos: list[VideoStatus]) -> list[VideoStatus]:
    """The videos as a cancelled job ends: done and failed ones as they are, every other one ``cancelled`` (no
    output: nothing of it was kept)."""
    now = utc_now()
    return [
        v
        if v.state in ("done", "failed", "cancelled")
        else v.model_copy(update={"state": "cancelled", "finished": now, "output": None, "poster": None})
        for v in videos
    ]


def finish_unstarted(
    claimed: ClaimedJob,
    outbox: Path,
    request: CancelStatus,
    *,
    ready_marker: str,
    max_toml_bytes: int = MAX_JOB_TOML_BYTES,
    worker: str | None = None,
    device: str | None = None,
    job_ended: JobEnded = no_job_ended,
) -> JobStatus:
    """Finish a claimed job that is not running as cancelled: status.json (its videos cancelled, those done in an
    earlier attempt kept), a job.log line, the inputs archived; then ``job_ended`` is told. Called by whoever holds
    the claim: the canceller for a job it took from the inbox, the worker for a job whose request came before it
    started."""
    out_dir = outbox_dir_for(outbox, claimed.job_id, claimed.claimed_at)
    remove_temps(out_dir)  # what a killed render left (a partial output under its temporary name), as a resume does
    remove_temps(claimed.path)
    path = status_file(out_dir)
    previous = read_status(path) if path.is_file() else None
    status = previous or first_status(claimed)
    update: dict[str, object] = {"host": socket.gethostname(), "pid": os.getpid(), "error": None, "cancel": request}
    if worker is not None:
        update.update(worker=worker, device=device)
    try:
        spec: JobSpec | None = load_job(
            claimed.folder,
            job_id=claimed.job_id,
            name=claimed.name,
            ready_marker=ready_marker,
            max_toml_bytes=max_toml_bytes,
        )
    except HeygemdError:  # a job that could not have run: it is cancelled with no video to list
        spec = None
    if spec is not None and not status.videos:
        update.update(
            audio=AudioStatus(file=spec.audio.name),
            videos=[VideoStatus(input=v.name) for v in spec.videos],
            ignored=spec.ignored,
        )
    status = status.model_copy(update=update)
    status = status.model_copy(
        update={"videos": cancelled_videos(status.videos), "state": "cancelled", "finished": utc_now()}
    )
    with structlog.contextvars.bound_contextvars(job_id=claimed.job_id), job_log(log_file(out_dir)):
        written = write_status(path, status.recomputed())
        done, _failed, total = written.counts()
        log.warning(
            "job.cancelled",
            videos_done=done,
            videos=total,
            started=False,
            requested_by=request.by,
        )
    finish_inputs(claimed, "archive")
    tell_job_ended(job_ended, written, spec.options if spec is not None else JobOptions())
    return written


# ---------------------------------------------------------------------------------------------- asking


@dataclass(frozen=True)
class CancelAnswer:
    """What a cancel did: ``cancelled`` (at once: the job had not started) or ``cancelling`` (the worker running it,
    or the next one to take it, stops it; status.json says ``cancelled`` when it has)."""

    job_id: str
    state: Literal["cancelled", "cancelling"]
    status: JobStatus | None = None


FinishIdle = Callable[[ClaimedJob, CancelStatus], "JobStatus | None"]
"""Finish a claimed job with a cancel request at once when nobody runs it (and return its status); None when that
cannot be proven (a worker holds it, or there is no way to tell): the worker then acts on the request."""


def cancel_job(
    job_id: str,
    *,
    inbox: Path,
    outbox: Path,
    state_dir: Path,
    ready_marker: str,
    by: str,
    finish_idle: FinishIdle | None = None,
    max_toml_bytes: int = MAX_JOB_TOML_BYTES,
    job_ended: JobEnded = no_job_ended,
) -> CancelAnswer:
    """Cancel ``job_id`` (the id `heygemd status` and the dashboard show; for a job still in the inbox, its folder's
    name). Raises JobNotFound when there is no such job, AlreadyFinished when it has finished. ``job_ended`` is told
    of a job cancelled at once."""
    if not plain_name(job_id, is_dir=True):  # a job id names one ordinary folder
        raise JobNotFound(f"there is no job {job_id!r}")
    for _attempt in range(3):  # the job may move on between two looks (inbox -> claimed -> finished)
        answer = _cancel_once(
            job_id, Path(inbox), Path(outbox), Path(state_dir), ready_marker, max_toml_bytes, by, finish_idle, job_ended
        )
        if answer is not None:
            log.info(
                "job.cancel_requested",
                job_id=answer.job_id,
                requested_by=by,
                result=answer.state,
            )
            return answer
    raise JobNotFound(f"job {job_id!r} moved while it was being cancelled; it is no longer anywhere to cancel")


def _cancel_once(
    job_id: str,
    inbox: Path,
    outbox: Path,
    state_dir: Path,
    ready_marker: str,
    max_toml_bytes: int,
    by: str,
    finish_idle: FinishIdle | None,
    job_ended: JobEnded,
) -> CancelAnswer | None:
    status = _outbox_status(job_folder(outbox, job_id))
    if status is not None and status.state in FINISHED_JOB_STATES:
        raise AlreadyFinished(
            f"job {job_id!r} is already {status.state}",
            hint="Nothing is left to cancel; delete the job (`heygemd delete "
            f"{shlex.quote(job_id)}`, or Delete on its page) if its results are not wanted.",
        )
    claim_id = status.job_id if status is not None else job_id
    claim_path = claim_folder(state_dir, claim_id)
    claimed = read_claim(claim_path)
    if claimed is not None:
        try:
            request = write_request(claim_path, by)
        except FileNotFoundError:  # finished meanwhile: look again
            return None
        final = finish_idle(claimed, request) if finish_idle is not None else None
        if final is not None:
            return CancelAnswer(claim_id, "cancelled", final)
        return CancelAnswer(claim_id, "cancelling", status)
    if status is not None:  # processing or queued, but its claim has just left: it has finished
        return None
    folder = inbox / job_id
    if not folder.is_dir() or folder.is_symlink() or _same(folder, state_dir):
        raise JobNotFound(f"there is no job {job_id!r} in the inbox, the claimed jobs or the outbox")
    try:
        claimed = claim(Candidate(name=job_id, path=folder), state_dir, outbox=outbox)
    except OSError as exc:  # e.g. EACCES/EBUSY: a client on the share holds a file of it open
        raise CancelRefused(
            f"job {job_id!r} could not be taken out of the inbox ({exc.strerror or exc})", path=None
        ) from None
    if claimed is None:  # the intake took it first: it is claimed now
        return None
    request = write_request(claimed.path, by)
    final = finish_unstarted(
        claimed, outbox, request, ready_marker=ready_marker, max_toml_bytes=max_toml_bytes, job_ended=job_ended
    )
    return CancelAnswer(claimed.job_id, "cancelled", final)


def _outbox_status(folder: Path) -> JobStatus | None:
    path = status_file(folder)
    if folder.is_symlink() or not path.is_file():
        return None
    try:
        return read_status(path)
    except (ValidationError, ValueError):
        return None


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
