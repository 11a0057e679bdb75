"""Acting on jobs, for every front door (the CLI, the web pages and the API): submit, cancel, retry, delete and
look up, in one module between them and the daemon, so a job is treated the same whoever asks.

- **Submit**: a job is put together in a staging folder (:meth:`Control.staging`; the web upload streams into
  it), then :meth:`Control.submit` writes its job.toml and the ready marker last and renames it into the inbox in
  one step (:mod:`heygemd.daemon.staging`): the intake sees nothing, or the whole job.
- **Cancel** is the daemon's (:mod:`heygemd.daemon.cancel`): a waiting job is cancelled at once, a rendering one
  stops at its next batch.
- **Submit** refuses a job naming an engine that no live renderer can run (EngineNotInstalled, naming the files it
  lacks): the renderers' heartbeat records say which engines they have (``heygemd.daemon.presence``).
- **Retry** submits a NEW inbox job (named ``<job>-retry``, or -retry-2 ...) holding the original audio, the
  presenters whose videos failed or were cancelled, and the original job.toml, copied from the archived inputs;
  a job that failed as a whole is submitted with every file of its archived inputs (where the user may have fixed
  them). The original job is left as it is.
- **Delete** removes the job's outbox folder and its archived inputs, each renamed into a trash folder first and
  then removed (symlinks are removed, never followed).

Neither retry nor delete acts on a job that is queued or rendering (JobBusy). When another request deletes the job
while a retry copies its inputs or a delete moves it, the loser raises JobChanged and leaves nothing behind.

- **Priority**: a job waiting in the inbox gets its new priority in a note in the state folder
  (:mod:`heygemd.daemon.notes`), which its claim takes over; in a farm, a job whose task waits in the broker is
  queued again with it (``requeue``). A job that has started keeps its place: it is never pre-empted.
- **Pause and resume** the intake (:mod:`heygemd.daemon.schedule`): no job starts while paused, across restarts.

Every action says who asked (``by``: ``web anna from 10.0.0.7``, ``cli anna@gpu-2``), in its log event and, for a
submit or a retry, in the new job's ``submitted_by``; a cancel also in the job's status.json.

A farm is wired in from above: the front door that knows it runs a farm (the CLI, from ``[queue] broker``) hands
in ``finish_idle``, the farm's way to finish at once a job whose task still waits in the broker
(:func:`heygemd.farm.cancel.idle_finisher`); without it the worker that takes the job acts on the request;
``requeue``, the farm's way to give a queued task a new priority (:func:`heygemd.farm.priority.requeuer`). So is
``job_ended``, told of a job a cancel finishes at once (its callback and its message for people, as a worker tells
of the jobs it finishes).

A submission naming a ``callback_url`` is refused before anything is queued when the server would not call it
(:meth:`Control.check`: CALLBACK_NOT_ALLOWED naming ``[notify] callback_hosts``, or no signing secret).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import structlog
from pydantic import ValidationError

from heygemd import layout
from heygemd.daemon import library, staging
from heygemd.daemon.cancel import CancelAnswer, FinishIdle, cancel_job, read_request
from heygemd.daemon.claims import ClaimedJob, claimed_jobs, read_claim
from heygemd.daemon.hooks import JobEnded, no_job_ended
from heygemd.daemon.jobs import (
    JOB_TOML,
    JobOptions,
    asked_priority,
    job_toml,
    listed_inputs,
    load_job,
    load_options,
)
from heygemd.daemon.library import PresenterOptions, PresenterStatus
from heygemd.daemon.notes import nas_submitter, read_note, write_note
from heygemd.daemon.outbox import archived_inputs
from heygemd.daemon.presence import Renderer, live_renderers
from heygemd.daemon.presenter_links import PresenterLinks, named_presenters, read_links
from heygemd.daemon.priority import effective
from heygemd.daemon.readiness import scan_inbox
from heygemd.daemon.schedule import IntakeState, Schedule, pause, resume
from heygemd.daemon.status import FINISHED_JOB_STATES, AudioStatus, JobStatus, VideoStatus, read_status, utc_now
from heygemd.daemon.waiting import WaitingJobs, read_waiting_jobs, waiting_text
from heygemd.engine_names import AUTO, ENGINES
from heygemd.engines import check_installed, resolve_engine_name
from heygemd.errors import (
    AlreadyFinished,
    BadStatus,
    EngineNotInstalled,
    HeygemdError,
    InputsGone,
    JobBusy,
    JobChanged,
    JobError,
    JobNotFound,
    NoSuchPresenter,
    NothingToRetry,
    NoVideoStream,
    PresenterBusy,
)
from heygemd.fsutil import contained, exclusive_lock, fsync_dir, is_real_dir, is_real_file, own_dir, remove_tree
from heygemd.names import fit_name, is_presenter, plain_name
from heygemd.notify.callbacks import check_callback_url
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.control")

RETRIED = frozenset({"failed", "cancelled", "not_started"})
"""The videos a retry submits again."""

Renderers = Callable[[], list[Renderer]]
"""The live renderers (``heygemd.daemon.presence``): a single host's from the state folder; a farm's front
doors are handed one that also reads the workers' records in Redis."""

Requeue = Callable[[ClaimedJob, int], str | None]
"""A farm's way to put a claimed job's waiting task back in the broker with a new priority: None when done, else
why not (a worker has taken the job, the broker is unreachable)."""


@dataclass(frozen=True)
class EngineChoice:
    """An engine a job may name, and why it cannot be chosen now (None: it can)."""

    name: str
    why_not: str | None = None


class Control:
    """The job actions on ``settings``' inbox, outbox and state folder."""

    def __init__(
        self,
        settings: Settings,
        *,
        finish_idle: FinishIdle | None = None,
        requeue: Requeue | None = None,
        schedule: Schedule | None = None,
        job_ended: JobEnded = no_job_ended,
        renderers: Renderers | None = None,
    ) -> None:
        self.settings = settings
        self.finish_idle = finish_idle
        self.requeue = requeue
        self.job_ended = job_ended
        paths = settings.paths
        self.inbox, self.outbox, self.state = paths.inbox, paths.outbox, paths.state_dir
        self.renderers: Renderers = renderers if renderers is not None else partial(live_renderers, self.state)
        self.schedule = schedule if schedule is not None else Schedule(self.state, settings.intake.hours)

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
        on a host ``[notify] callback_hosts`` allows, on a server with a signing secret (CallbackNotAllowed); an
        engine a live renderer can run (EngineNotInstalled: :meth:`check_engine`)."""
        if options.callback_url is not None:
            check_callback_url(options.callback_url, self.settings.notify)
        self.check_engine(options.engine)

    def submit(
        self,
        folder: Path,
        *,
        name: str,
        options: JobOptions | None = None,
        tail: str = "",
        submitted_by: str | None = None,
    ) -> str:
        """Put the job built in the staging ``folder`` into the inbox: its job.toml (the ``options`` that are set,
        checked by :meth:`check`), the ready marker last, then one rename to the first free name among name<tail>,
        name<tail>-2, ... Returns the job's id. ``submitted_by`` (who asks) is noted in the state folder before the
        job can be seen. The staging folder is discarded on failure, and so is a job whose job.toml names an engine
        that no live renderer can run (EngineNotInstalled: :meth:`check_engine`)."""

        def note(job_id: str) -> None:
            if submitted_by:
                write_note(self.state, job_id, folder, submitted_by=submitted_by)

        try:
            if options is not None:
                self.check(options)
            if options is not None and (text := job_toml(options)):
                (folder / JOB_TOML).write_text(text, encoding="utf-8")
            self.check_engine(self._engine_asked(folder))
            staging.mark_ready(folder, self.settings.intake.ready_marker)
            job_id = staging.publish(
                folder,
                name=name,
                tail=tail,
                inbox=self.inbox,
                outbox=self.outbox,
                state_dir=self.state,
                before_rename=note,
            )
        except OSError as exc:
            staging.discard(folder)
            if staging.is_disk_full(exc):
                raise staging.disk_full(f"job {name!r}") from None
            raise
        except BaseException:
            staging.discard(folder)
            raise
        log.info("job.submitted", job_id=job_id, submitted_by=submitted_by or "")
        return job_id

    def _engine_asked(self, folder: Path) -> str | None:
        """The engine the job.toml of the job built in ``folder`` names, as the worker will read it (None when it
        names none, or cannot be read: then the job fails with its own error, as from the share)."""
        path = folder / JOB_TOML
        if not is_real_file(path):
            return None
        try:
            return load_options(path, max_bytes=self.settings.intake.max_job_toml_bytes).engine
        except HeygemdError:
            return None

    # -- engines

    def check_engine(self, engine: str | None, renderers: list[Renderer] | None = None) -> None:
        """EngineNotInstalled when no live renderer can run ``engine`` (None or ``auto``: any can), naming the files
        it lacks and where they go. With no renderer running, the models folder as this process sees it decides."""
        if engine is None or engine == AUTO:
            return
        renderers = self.renderers() if renderers is None else renderers
        if renderers and any(engine in r.engines for r in renderers):
            return
        check_installed(engine, self.settings.engine, self.settings.paths.models)  # the files' own message
        if renderers:
            raise EngineNotInstalled(
                f"engine {engine!r} is not installed on any running renderer: "
                + "; ".join(r.described() for r in renderers),
                hint="Put its files into the models folder of a renderer (`heygemd check` there lists them) and "
                "restart it, or choose an engine a renderer has.",
            )

    def engine_choices(self) -> list[EngineChoice]:
        """Every engine, and why a job cannot name it now (:meth:`check_engine`): what the new-job form offers."""
        renderers = self.renderers()
        choices = []
        for name in ENGINES:
            try:
                self.check_engine(name, renderers)
            except EngineNotInstalled as exc:
                choices.append(EngineChoice(name, exc.message))
            else:
                choices.append(EngineChoice(name))
        return choices

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
            return self.queued(job_id, job_id, folder, _mtime(folder), waiting=read_waiting_jobs(self.state))
        raise JobNotFound(f"no job {job_id!r}")

    def with_request(self, status: JobStatus) -> JobStatus:
        """A running job's status with the cancel request its worker has not acted on yet (pages show it)."""
        if status.cancel is not None or status.state not in ("queued", "processing"):
            return status
        request = read_request(layout.claim_folder(self.state, status.job_id))
        return status if request is None else status.model_copy(update={"cancel": request})

    def queued(
        self,
        job_id: str,
        name: str,
        folder: Path,
        created: datetime,
        claim_path: Path | None = None,
        *,
        waiting: WaitingJobs | None = None,
    ) -> JobStatus:
        """A ``queued`` status for a job not started yet (``claim_path``: its claim folder, where a cancel request
        waits for the worker to take the job; ``waiting``: what the inbox's jobs wait for, for one still there)."""
        waits: str | None = None
        if claim_path is not None:
            record = read_claim(claim_path)
            submitted_by = record.submitted_by if record is not None else None
            changed = record.priority if record is not None else None
            if not self.settings.queue.broker:  # a farm's claimed job waits for a worker, not for the intake
                waits = self.schedule.now().waits_for
        else:
            note = read_note(self.state, job_id, folder)
            submitted_by = note.submitted_by if note is not None and note.submitted_by else nas_submitter(folder)
            changed = note.priority if note is not None else None
            waits = self.schedule.now().waits_for or (
                waiting_text(job_id, waiting, utc_now()) if waiting is not None else None
            )
        audio: str | None = None
        videos: list[VideoStatus] = []
        try:  # as the worker will read it (job.toml may name the audio)
            spec = load_job(folder, job_id=job_id, name=name)
            audio, videos = spec.audio.name, [VideoStatus(input=v.name) for v in spec.videos]
        except (HeygemdError, OSError):  # not complete yet, or it will fail: what it holds so far
            audio, presenters = listed_inputs(folder)
            videos = [VideoStatus(input=name) for name in presenters]
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
            submitted_by=submitted_by,
            priority=effective(changed, asked_priority(folder, max_toml_bytes=self.settings.intake.max_job_toml_bytes)),
            waiting=waits,
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

    def retry(self, job_id: str, *, engine: str | None = None, by: str | None = None) -> str:
        """Submit ``job_id`` again as a new job; returns the new job's id. A job that failed as a whole (its own
        ``error``: a bad job.toml, no audio, an engine not installed) is submitted with every file of its archived
        inputs (but the presenters already done), as the user may have fixed them there; else its failed, cancelled
        and not started videos with its audio and job.toml. ``engine``: the new job's engine instead of the one
        its job.toml names. ``by``: who asks (the new job's ``submitted_by``)."""
        status = self.lookup(job_id)
        _require_finished(status)
        whole = status.error is not None
        retried = [v for v in status.videos if v.state in RETRIED]
        if not whole and not retried:
            raise NothingToRetry(f"job {job_id!r} has no failed or cancelled video")
        folder = archived_inputs(self.state, status)
        if folder is None:
            raise InputsGone(f"the inputs of job {job_id!r} are not in the archive")
        inputs = layout.inputs(folder)
        if inputs.is_symlink():
            raise InputsGone(f"the archived inputs of job {job_id!r} are a symlink; they are not followed")
        options: JobOptions | None = None
        if whole:
            # the library presenters linked into it come again from the library, as its job.toml names them
            links = read_links(folder)
            linked = {p.file for p in links.presenters if p.file} if links is not None else set()
            done = {v.input for v in status.videos if v.state == "done"}
            try:
                names = [name for name in _plain_files(inputs) if name not in done | linked]
            except FileNotFoundError:
                raise JobChanged(
                    f"the archived inputs of job {job_id!r} went away meanwhile; nothing was queued"
                ) from None
            if not names:
                raise InputsGone(f"the archived inputs of job {job_id!r} hold no file")
        else:
            if status.audio is None:
                raise InputsGone(f"the inputs of job {job_id!r} are not in the archive")
            # a library presenter that never reached the job (unknown, failed to prepare), or whose archived file
            # is no longer the one linked (a library file overwritten in place: PRESENTER_CHANGED), is named again;
            # the files rendered (the job's own, and the presenters linked into it) are copied from the archive
            links = read_links(folder) or PresenterLinks()
            named_again = [
                v.presenter
                for v in retried
                if v.presenter and not (is_real_file(inputs / v.input) and _as_linked(links, inputs / v.input))
            ]
            failed = [v.input for v in retried if v.presenter is None or v.presenter not in named_again]
            toml = [JOB_TOML] if (inputs / JOB_TOML).is_file() else []
            if toml and (original := load_options(inputs / JOB_TOML)).presenters:
                options, toml = original.model_copy(update={"presenters": named_again or None}), []
                if engine is not None:
                    options, engine = options.model_copy(update={"engine": engine}), None
            names = [status.audio.file, *failed, *toml]
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
            if engine is not None:
                self._set_engine(target, engine, shown=f"{status.job_name}/{JOB_TOML}")
        except BaseException:
            staging.discard(target)
            raise
        try:
            new_id = self.submit(target, name=status.job_name, options=options, tail="-retry", submitted_by=by)
        except EngineNotInstalled as exc:  # the job names it: say how to retry with one that is there
            there = [c.name for c in self.engine_choices() if c.why_not is None and c.name != AUTO]
            if not there:
                raise
            raise EngineNotInstalled(
                exc.message,
                hint=f"{exc.hint} Or retry it with an engine that is installed ({', '.join(there)}): "
                f"`heygemd retry {shlex.quote(job_id)} --engine {there[0]}`, or ?engine={there[0]} on the API's retry.",
            ) from None
        log.info("job.retried", job_id=job_id, new_job_id=new_id, by=by or "")
        return new_id

    def _set_engine(self, folder: Path, engine: str, *, shown: str) -> None:
        """Make the job.toml of the job built in ``folder`` name ``engine`` (its other options kept)."""
        path = folder / JOB_TOML
        try:
            options = load_options(path, max_bytes=self.settings.intake.max_job_toml_bytes) if path.exists() else None
        except JobError as exc:
            raise JobError(
                exc.message.replace(str(path), shown), hint=f"{exc.hint} Retry without an engine to keep it as it is."
            ) from None
        options = (options or JobOptions()).model_copy(update={"engine": engine})
        path.write_text(job_toml(options), encoding="utf-8")

    def delete(self, job_id: str, *, by: str | None = None) -> None:
        """Remove a finished job: its outbox folder and its archived inputs (``by``: who asks, logged)."""
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
        log.info("job.deleted", job_id=job_id, by=by or "")

    # -- priority

    def set_priority(self, job_id: str, priority: int, *, by: str | None = None) -> JobStatus:
        """Give a job that has not started the ``priority`` (0-9); returns its status. JobBusy for a job that has
        started (it is never pre-empted), AlreadyFinished for one that has finished, JobNotFound."""
        if not plain_name(job_id, is_dir=True):
            raise JobNotFound(f"no job {job_id!r}")
        folder = self.inbox / job_id
        if is_real_dir(folder):
            with contextlib.suppress(FileNotFoundError):  # taken out of the inbox meanwhile: claimed, below
                write_note(self.state, job_id, folder, priority=priority)
            if read_note(self.state, job_id, folder) is not None:  # still in the inbox: the intake will see it
                log.info("job.priority_changed", job_id=job_id, priority=priority, by=by or "")
                return self.lookup(job_id)
        status = self.lookup(job_id)  # claimed meanwhile, or before
        if status.state in FINISHED_JOB_STATES:
            raise AlreadyFinished(
                f"job {job_id!r} is already {status.state}: its priority no longer matters",
                hint="A priority orders the jobs that wait. To render it again, retry it "
                f"(`heygemd retry {shlex.quote(job_id)}`, or Retry on its page): the new job can have a priority.",
            )
        claimed = read_claim(layout.claim_folder(self.state, job_id))
        if status.state != "queued" or claimed is None or self.requeue is None:
            why: str | None = "it has started, and a job that has started keeps its place"
        else:
            why = self.requeue(claimed, priority)
        if why is not None:
            raise JobBusy(
                f"the priority of job {job_id!r} cannot change: {why}",
                hint="A priority orders the jobs that wait; this one is rendering, or next to render.",
            )
        log.info("job.priority_changed", job_id=job_id, priority=priority, by=by or "")
        return self.lookup(job_id)

    # -- the intake: hours and pause

    def intake(self) -> IntakeState:
        """Whether the intake takes jobs now (the rendering hours, the pause)."""
        return self.schedule.now()

    def pause(self, *, by: str) -> IntakeState:
        """Stop taking jobs (kept across restarts; a job in progress finishes)."""
        record = pause(self.state, by)
        log.info("intake.paused", by=record.by)
        return self.intake()

    def resume(self, *, by: str) -> IntakeState:
        """Take jobs again."""
        if resume(self.state):
            log.info("intake.resumed", by=by)
        return self.intake()

    # -- the presenter library

    def presenters(self) -> list[PresenterStatus]:
        """Every presenter of the library, with its state (:func:`heygemd.daemon.library.view`)."""
        return library.view(self.settings)

    def presenter(self, name: str) -> PresenterStatus:
        """One presenter (its name as :func:`heygemd.daemon.library.find` finds it); NoSuchPresenter when there is
        none."""
        found = library.find(self.presenters(), name)
        if found is None:
            raise NoSuchPresenter(f"no presenter {name!r} in the library")
        return found

    def add_presenter(
        self, source: Path, *, name: str = "", options: PresenterOptions | None = None, move: bool = False
    ) -> PresenterStatus:
        """Add the video or photo ``source`` to the library as the presenter ``name`` (default: the file's stem),
        made safe as an uploaded job's name is, with its options in ``<name>.toml``; the daemon prepares it at once.
        ``move``: ``source`` is an upload's staging copy (moved where it can be, else copied); otherwise it is copied.
        PresenterExists when the name is taken; NoVideoStream when the file is no video or photo by its name."""
        if not is_presenter(source):
            raise NoVideoStream(f"{source.name!r} is not a video or a photo (by its name)")
        wanted = library.safe_name(name) or library.presenter_name(source.name) or "presenter"
        with self._library_locked():
            library.add_to_library(
                self.settings.paths.presenters_dir,
                source,
                name=wanted,
                options=options or PresenterOptions(),
                ready_marker=self.settings.intake.ready_marker,
                existing=library.library_files(self.settings),
                move=move,
            )
            return self.presenter(wanted)

    def require_presenters(self, names: list[str]) -> None:
        """NoSuchPresenter naming the first of ``names`` the library does not have (and the presenters it has)."""
        files = library.library_files(self.settings)
        unknown = [name for name, found in library.named(files, names) if found is None]
        if unknown:
            raise library.unknown_presenter(unknown[0], files, self.settings.paths.presenters_dir)

    def remove_presenter(self, name: str) -> None:
        """Remove a presenter from the library (its file, toml and ready marker). PresenterBusy while a job waiting in
        the inbox or claimed and not finished names it (job.toml presenters); NoSuchPresenter when there is none."""
        with self._library_locked():
            found = library.find(library.library_files(self.settings), name)
            if found is None:
                raise NoSuchPresenter(f"no presenter {name!r} in the library")
            busy = self.jobs_naming(found.name)
            if busy:
                raise PresenterBusy(
                    f"the presenter {found.name!r} is named by jobs not finished yet: {', '.join(busy)}"
                )
            library.remove_from_library(
                self.settings.paths.presenters_dir, found, ready_marker=self.settings.intake.ready_marker
            )

    @contextlib.contextmanager
    def _library_locked(self) -> Iterator[None]:
        """Held while a presenter is added or removed (web requests, the CLI): one at a time, so two adds of one
        name never both write it (two files for one name, one's toml over the other's), nor a remove part of an
        add."""
        with exclusive_lock(layout.library_lock(own_dir(self.settings.paths.state_dir))):
            yield

    def jobs_naming(self, name: str) -> list[str]:
        """The jobs queued (in the inbox, or claimed) or running whose job.toml names the presenter ``name``."""
        folders = [(job.job_id, job.folder) for job in claimed_jobs(self.state)]
        try:
            folders += [(c.name, c.path) for c in scan_inbox(self.inbox, self.state)]
        except FileNotFoundError:
            pass
        max_bytes = self.settings.intake.max_job_toml_bytes
        naming = []
        for job_id, folder in folders:
            wanted = named_presenters(folder, max_toml_bytes=max_bytes)
            if wanted == "all" or (wanted and any(library.asks_for(asked, name) for asked in wanted)):
                naming.append(job_id)
        return sorted(set(naming))


def _require_finished(status: JobStatus) -> None:
    if status.state not in FINISHED_JOB_STATES:
        raise JobBusy(f"job {status.job_id!r} is {status.state}")


def _as_linked(links: PresenterLinks, path: Path) -> bool:
    """Whether the archived file ``path`` is as it was put into the job: a job's own file always is; a library
    presenter's hard link is the library's file, which an overwrite in place changes (``LinkedPresenter.matches``)."""
    linked = links.of_file(path.name)
    if linked is None:
        return True
    try:
        return linked.matches(path.stat(follow_symlinks=False))
    except FileNotFoundError:  # gone meanwhile: taken from the library again
        return False


def _plain_files(folder: Path) -> list[str]:
    """The plain regular files directly in ``folder`` (links, folders and hidden names left out), by name."""
    return sorted(name for name in os.listdir(folder) if plain_name(name) and is_real_file(folder / name))


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
