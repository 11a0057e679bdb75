"""Acting on jobs, for every front door (the CLI, the web pages and the API): submit, cancel, retry, delete and
look up, in one module between them and the daemon, so a job is treated the same whoever asks.

- **Submit**: a job is put together in a staging folder (:meth:`Control.staging`; the web upload streams into
  it), then :meth:`Control.submit` writes its job.toml and the ready marker last and renames it into the inbox in
  one step (:mod:`heygemd.daemon.staging`): the intake sees nothing, or the whole job.
- **Cancel** is the daemon's (:mod:`heygemd.daemon.cancel`): a waiting job is cancelled at once, a rendering one
  stops at its next batch.
- **Retry** submits a NEW inbox job (named ``<job>-retry``, or -retry-2 ...) holding the original audio, the
  presenters whose videos failed or were cancelled, and the original job.toml, copied from the archived inputs;
  the original job is left as it is.
- **Delete** removes the job's outbox folder and its archived inputs, each renamed into a trash folder first and
  then removed (symlinks are removed, never followed).

Neither retry nor delete acts on a job that is queued or rendering (JobBusy). When another request deletes the job
while a retry copies its inputs or a delete moves it, the loser raises JobChanged and leaves nothing behind.

A farm is wired in from above: the front door that knows it runs a farm (the CLI, from ``[queue] broker``) hands
in ``finish_idle``, the farm's way to finish at once a job whose task still waits in the broker
(:func:`heygemd.farm.cancel.idle_finisher`); without it the worker that takes the job acts on the request. So is
``job_ended``, told of a job a cancel finishes at once (its callback and its message for people, as a worker tells
of the jobs it finishes).

A submission naming a ``callback_url`` is refused before anything is queued when the server would not call it
(:meth:`Control.check`: CALLBACK_NOT_ALLOWED naming ``[notify] callback_hosts``, or no signing secret).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from heygemd import layout
from heygemd.daemon import staging
from heygemd.daemon.cancel import CancelAnswer, FinishIdle, cancel_job, read_request
from heygemd.daemon.claims import claimed_jobs
from heygemd.daemon.hooks import JobEnded, no_job_ended
from heygemd.daemon.jobs import JOB_TOML, JobOptions, job_toml, load_job
from heygemd.daemon.outbox import archived_inputs
from heygemd.daemon.status import FINISHED_JOB_STATES, AudioStatus, JobStatus, VideoStatus, read_status
from heygemd.engines import resolve_engine_name
from heygemd.errors import (
    BadStatus,
    HeygemdError,
    InputsGone,
    JobBusy,
    JobChanged,
    JobNotFound,
    NothingToRetry,
)
from heygemd.fsutil import contained, fsync_dir, is_real_dir, is_real_file, own_dir, remove_tree
from heygemd.names import fit_name, is_audio, is_presenter, plain_name
from heygemd.notify.callbacks import check_callback_url
from heygemd.settings import Settings

RETRIED = frozenset({"failed", "cancelled"})
"""The videos a retry submits again."""


class Control:
    """The job actions on ``settings``' inbox, outbox and state folder."""

    def __init__(
        self, settings: Settings, *, finish_idle: FinishIdle | None = None, job_ended: JobEnded = no_job_ended
    ) -> None:
        self.settings = settings
        self.finish_idle = finish_idle
        self.job_ended = job_ended
        paths = settings.paths
        self.inbox, self.outbox, self.state = paths.inbox, paths.outbox, paths.state_dir

    def tidy(self) -> None:
        """What a crash left of earlier submits and deletes: old staging folders, the outbox's trash."""
        staging.clean_stale(self.state)
        _empty_outbox_trash(self.outbox)

    # -- submit

    def staging(self) -> Path:
        """A fresh, empty staging folder to put a job together in (DiskFull when there is no room)."""
        return staging.new_staging(self.state)

    def discard(self, folder: Path) -> None:
        """Give up a staging folder (and what it holds)."""
        staging.discard(folder)

    def check(self, options: JobOptions) -> None:
        """What the ``options`` of a submission must pass before anything is received or queued: a ``callback_url``
        on a host ``[notify] callback_hosts`` allows, on a server with a signing secret (CallbackNotAllowed)."""
        if options.callback_url is not None:
            check_callback_url(options.callback_url, self.settings.notify)

    def submit(self, folder: Path, *, name: str, options: JobOptions | None = None, tail: str = "") -> str:
        """Put the job built in the staging ``folder`` into the inbox: its job.toml (the ``options`` that are set,
        checked by :meth:`check`), the ready marker last, then one rename to the first free name among name<tail>,
        name<tail>-2, ... Returns the job's id. The staging folder is discarded on failure."""
        try:
            if options is not None:
                self.check(options)
            if options is not None and (text := job_toml(options)):
                (folder / JOB_TOML).write_text(text, encoding="utf-8")
            staging.mark_ready(folder, self.settings.intake.ready_marker)
            return staging.publish(
                folder, name=name, tail=tail, inbox=self.inbox, outbox=self.outbox, state_dir=self.state
            )
        except OSError as exc:
            staging.discard(folder)
            if staging.is_disk_full(exc):
                raise staging.disk_full(f"job {name!r}") from None
            raise
        except BaseException:
            staging.discard(folder)
            raise

    # -- look up

    def job_dir(self, job_id: str) -> Path:
        """The job's outbox folder (JobNotFound when the id is not a plain folder there)."""
        folder = layout.job_folder(self.outbox, job_id)
        if not plain_name(job_id, is_dir=True) or not is_real_dir(folder) or not contained(folder, self.outbox):
            raise JobNotFound(f"no job {job_id!r} in the outbox")
        return folder

    def lookup(self, job_id: str) -> JobStatus:
        """The job's status.json (with a cancel request its worker has not acted on yet), or a ``queued`` status
        made from its folder while it waits in the claim folder or the inbox. JobNotFound when there is no such
        job; BadStatus when its status.json cannot be read."""
        if not plain_name(job_id, is_dir=True):
            raise JobNotFound(f"no job {job_id!r}")
        folder = layout.job_folder(self.outbox, job_id)
        path = layout.status_file(folder)
        if is_real_dir(folder) and is_real_file(path):
            try:
                return self.with_request(read_status(path))
            except (ValidationError, ValueError) as exc:
                raise BadStatus(f"status.json is not readable ({str(exc).splitlines()[0]})", path=job_id) from None
        for job in claimed_jobs(self.state):
            if job.job_id == job_id:
                return self.queued(job.job_id, job.name, job.folder, job.claimed_at, job.path)
        folder = self.inbox / job_id
        if is_real_dir(folder):
            return self.queued(job_id, job_id, folder, _mtime(folder))
        raise JobNotFound(f"no job {job_id!r}")

    def with_request(self, status: JobStatus) -> JobStatus:
        """A running job's status with the cancel request its worker has not acted on yet (pages show it)."""
        if status.cancel is not None or status.state not in ("queued", "processing"):
            return status
        request = read_request(layout.claim_folder(self.state, status.job_id))
        return status if request is None else status.model_copy(update={"cancel": request})

    def queued(
        self, job_id: str, name: str, folder: Path, created: datetime, claim_path: Path | None = None
    ) -> JobStatus:
        """A ``queued`` status for a job not started yet (``claim_path``: its claim folder, where a cancel request
        waits for the worker to take the job)."""
        audio: str | None = None
        videos: list[VideoStatus] = []
        try:  # as the worker will read it (job.toml may name the audio)
            spec = load_job(folder, job_id=job_id, name=name)
            audio, videos = spec.audio.name, [VideoStatus(input=v.name) for v in spec.videos]
        except (HeygemdError, OSError):  # not complete yet, or it will fail: what it holds so far
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            for fname in names:
                if not plain_name(fname) or not is_real_file(folder / fname):
                    continue
                if is_audio(Path(fname)) and audio is None:
                    audio = fname
                elif is_presenter(Path(fname)):
                    videos.append(VideoStatus(input=fname))
        return JobStatus(
            job_id=job_id,
            job_name=name,
            state="queued",
            created=created,
            updated=created,
            host="",
            pid=0,
            audio=AudioStatus(file=audio) if audio else None,
            videos=videos,
            cancel=read_request(claim_path) if claim_path is not None else None,
        )

    def engine_name(self) -> str:
        """The engine that renders a job that names none (``engine.name``, ``auto`` resolved as the daemon does)."""
        return resolve_engine_name(self.settings.engine, self.settings.paths.models)

    # -- cancel, retry, delete

    def cancel(self, job_id: str, by: str) -> CancelAnswer:
        """Cancel ``job_id``: a job not started yet is cancelled at once, a rendering one stops at its next batch
        (JobNotFound, AlreadyFinished when it cannot be). ``by``: who asks (``daemon.cancel.requested_by``)."""
        intake = self.settings.intake
        return cancel_job(
            job_id,
            inbox=self.inbox,
            outbox=self.outbox,
            state_dir=self.state,
            ready_marker=intake.ready_marker,
            by=by,
            finish_idle=self.finish_idle,
            max_toml_bytes=intake.max_job_toml_bytes,
            job_ended=self.job_ended,
        )

    def retry(self, job_id: str) -> str:
        """Submit the failed (or cancelled) videos of ``job_id`` again as a new job; returns the new job's id."""
        status = self.lookup(job_id)
        _require_finished(status)
        failed = [v.input for v in status.videos if v.state in RETRIED]
        if not failed:
            raise NothingToRetry(f"job {job_id!r} has no failed or cancelled video")
        folder = archived_inputs(self.state, status)
        if folder is None or status.audio is None:
            raise InputsGone(f"the inputs of job {job_id!r} are not in the archive")
        inputs = layout.inputs(folder)
        if inputs.is_symlink():
            raise InputsGone(f"the archived inputs of job {job_id!r} are a symlink; they are not followed")
        names = [status.audio.file, *failed] + ([JOB_TOML] if (inputs / JOB_TOML).is_file() else [])
        missing = [n for n in names if not plain_name(n) or not (inputs / n).is_file()]
        if missing:
            raise InputsGone(f"archived inputs of job {job_id!r} lack {', '.join(missing)}")
        target = self.staging()
        try:
            for name in names:
                try:
                    _copy_regular(inputs / name, target / name)
                except FileNotFoundError:
                    raise JobChanged(
                        f"the archived inputs of job {job_id!r} went away while they were copied for the retry; "
                        "nothing was queued"
                    ) from None
                except OSError as exc:
                    if staging.is_disk_full(exc):
                        raise staging.disk_full(f"{job_id}/{name}") from None
                    raise
        except BaseException:
            staging.discard(target)
            raise
        return self.submit(target, name=status.job_name, tail="-retry")

    def delete(self, job_id: str) -> None:
        """Remove a finished job: its outbox folder and its archived inputs."""
        status = self.lookup(job_id)
        _require_finished(status)
        folder = self.job_dir(job_id)
        inputs = archived_inputs(self.state, status)
        try:
            if inputs is not None:
                _trash(inputs, layout.trash_root(self.state))
            _trash(folder, layout.outbox_trash(self.outbox))
        except FileNotFoundError:
            raise JobChanged(f"job {job_id!r} was deleted by another request meanwhile") from None


def _require_finished(status: JobStatus) -> None:
    if status.state not in FINISHED_JOB_STATES:
        raise JobBusy(f"job {status.job_id!r} is {status.state}")


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(os.lstat(path).st_mtime, timezone.utc)


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


def _trash(folder: Path, trash: Path) -> None:
    """Rename ``folder`` into ``trash`` (same filesystem), then remove it; a crash in between leaves only trash."""
    target = own_dir(trash) / fit_name(folder.name, f".{secrets.token_hex(4)}")
    os.rename(folder, target)
    fsync_dir(folder.parent)
    remove_tree(target)


def _empty_outbox_trash(outbox: Path) -> None:
    """Finish deletes a crash interrupted."""
    trash = layout.outbox_trash(outbox)
    if trash.is_dir() and not trash.is_symlink():
        for folder in trash.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                with contextlib.suppress(OSError):
                    remove_tree(folder)
            else:
                folder.unlink(missing_ok=True)
