"""Process one claimed job: its outbox folder, a live status.json, every video in isolation, resume after a crash.

Failure boundaries (the only broad catches): per video (the video fails, the job goes on) and per job
(the job fails, the daemon goes on). A stop request interrupts the current video; the job stays claimed
and the next start redoes only the videos that are not done. A cancel request (``heygemd.daemon.cancel``) stops
the current video the same way, but the job ends ``cancelled``: its done videos kept, its inputs archived.

The claimed files stay writable by the share's users while the job runs, so each input is opened once (the audio
at the start of the job, each video at the start of its render) and read only through that descriptor: a name
swapped meanwhile for another file, or for a link to one, is never read.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog

from heygemd import layout
from heygemd.daemon import review
from heygemd.daemon.cancel import CancelWatch, cancelled_videos, finish_unstarted, read_request
from heygemd.daemon.claims import ClaimedJob, first_status, renew_lease
from heygemd.daemon.hooks import JobEnded, TroubleSeen, no_job_ended, no_trouble, tell_job_ended, tell_trouble
from heygemd.daemon.jobs import MAX_JOB_TOML_BYTES, JobOptions, JobSpec, listed_inputs, load_job
from heygemd.daemon.outbox import finish_inputs, inputs_destination, outbox_dir_for
from heygemd.daemon.presenter_links import LinkedPresenter, Linker, PresenterLinks, read_links
from heygemd.daemon.priority import effective
from heygemd.daemon.status import (
    AudioStatus,
    ErrorStatus,
    JobStatus,
    RetryStatus,
    VideoStatus,
    read_status,
    utc_now,
    write_status,
)
from heygemd.errors import ConfigError, DiskFull, ErrorInfo, Interrupted, JobError, OutboxUnavailable, report_failure
from heygemd.fsutil import NO_SPACE_ERRNOS, InputFile, remove_temps
from heygemd.lipsync import LipSyncSession
from heygemd.logs import job_log
from heygemd.names import unique_output_name
from heygemd.pipeline.audio import AudioFeatures
from heygemd.pipeline.ffmpeg_tools import open_input
from heygemd.pipeline.run import RenderResult, VideoProgress
from heygemd.settings import InputsAfter, IntakeSettings, OutboxSettings, QualitySettings, Settings

log = structlog.get_logger("heygemd.worker")

PROGRESS_WRITE_INTERVAL = 1.0
"""Seconds between status.json rewrites for progress alone (state changes are written at once)."""


@dataclass
class JobContext:
    """What a job needs from the daemon around it."""

    session_for: Callable[[str | None], LipSyncSession]
    """The warm session for a job.toml engine override (None: the daemon's engine)."""
    should_stop: Callable[[], bool] = lambda: False
    heartbeat: Callable[[str], None] = lambda _text: None
    """Called as work progresses (the systemd watchdog and STATUS= follow it)."""
    inputs_after: InputsAfter = OutboxSettings.model_fields["inputs_after"].default
    naming: str = OutboxSettings.model_fields["naming"].default
    ready_marker: str = IntakeSettings.model_fields["ready_marker"].default
    max_job_toml_bytes: int = MAX_JOB_TOML_BYTES
    worker: str | None = None
    """The farm worker running the job (its Celery node name) and its device, for status.json; None on one host."""
    device: str | None = None
    quality: QualitySettings = field(default_factory=QualitySettings)
    """The check of every output (``heygemd.quality``) and what a video to review gets."""
    inbox: Path | None = None
    """The inbox as this process mounts it, to name the archive folder of a failed job as the share's users see
    it; None: the state folder's parent (the default state folder is ``<inbox>/.heygemd``)."""
    job_ended: JobEnded = no_job_ended
    """Told when a job ends, after its status.json is final and its inputs left the claim (callbacks, alerts)."""
    trouble: TroubleSeen = no_trouble
    """Told when a full disk pauses a job."""
    presenters: Linker | None = None
    """Puts the library presenters a job names into it (done at the claim; again here when a kill cut that short)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        session_for: Callable[[str | None], LipSyncSession],
        should_stop: Callable[[], bool],
        heartbeat: Callable[[str], None],
        worker: str | None = None,
        device: str | None = None,
        job_ended: JobEnded = no_job_ended,
        trouble: TroubleSeen = no_trouble,
    ) -> "JobContext":
        """The context of a process serving ``settings``' folders (a single host's daemon or a farm worker)."""
        return cls(
            session_for=session_for,
            should_stop=should_stop,
            heartbeat=heartbeat,
            inputs_after=settings.outbox.inputs_after,
            naming=settings.outbox.naming,
            ready_marker=settings.intake.ready_marker,
            max_job_toml_bytes=settings.intake.max_job_toml_bytes,
            quality=settings.quality,
            presenters=Linker.from_settings(settings),
            worker=worker,
            device=device,
            inbox=settings.paths.inbox,
            job_ended=job_ended,
            trouble=trouble,
        )


@dataclass
class _StatusFile:
    """status.json of one job: the current model, written atomically, progress writes throttled."""

    path: Path
    status: JobStatus
    claimed: ClaimedJob
    _last_write: float = field(default=0.0)

    def save(self, *, force: bool = True) -> None:
        """Write status.json (and renew the claim's lease). ``force=False``: a progress update, skipped when the
        last write is recent, and best effort: a share refusing one progress write does not fail the video. A
        forced write the outbox refuses raises :class:`OutboxUnavailable` (DiskFull when full): the job pauses."""
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_WRITE_INTERVAL:
            return
        try:
            self.status = write_status(self.path, self.status.recomputed())
            renew_lease(self.claimed)
        except OSError as exc:
            if force:
                raise outbox_refused(exc, self.path) from exc
            log.warning("status.write_failed", path=str(self.path), error=exc.strerror or str(exc))
        self._last_write = now

    def update(self, **fields: object) -> None:
        self.status = self.status.model_copy(update=fields)

    def update_video(self, index: int, **fields: object) -> None:
        videos = list(self.status.videos)
        videos[index] = videos[index].model_copy(update=fields)
        self.status = self.status.model_copy(update={"videos": videos})


class JobOutcome(enum.Enum):
    """How :func:`process_job` ended, which decides what the service loop does with the claim next."""

    FINISHED = "finished"  # every video reached done or failed; the inputs left claimed/
    FAILED = "failed"  # the job could not run (a job-level error is in status.json); the inputs were archived
    PAUSED = "paused"  # the machine's problem (disk full, outbox unreachable): still claimed, try again later
    INTERRUPTED = "interrupted"  # a stop request: still claimed, its unfinished videos pending, resumed later
    CANCELLED = "cancelled"  # a user's cancel: the videos done kept, the others cancelled; the inputs archived


@dataclass(frozen=True)
class JobResult:
    """The outcome and the last status written (None when not even status.json could be written)."""

    outcome: JobOutcome
    status: JobStatus | None = None


def outbox_refused(exc: OSError, path: Path) -> DiskFull:
    """The pause for an OSError writing ``path`` in the outbox: DiskFull when it is full, else OutboxUnavailable."""
    what = f"cannot write {path.name}: {exc.strerror or exc}"
    return (
        DiskFull(what, path=path.parent) if exc.errno in NO_SPACE_ERRNOS else OutboxUnavailable(what, path=path.parent)
    )


def process_job(claimed: ClaimedJob, outbox: Path, context: JobContext) -> JobResult:
    """Run ``claimed`` and say how it ended (:class:`JobOutcome`). Finished and failed jobs leave claimed/;
    paused and interrupted ones stay claimed with their unfinished videos pending; cancelled ones are archived.

    Never raises an error: this is the per-job failure boundary of every process that runs jobs (the single
    host's service loop and the farm's worker). Only a stop (:class:`~heygemd.daemon.lifecycle.StopNow`, not an
    Exception) passes through, leaving the job claimed for the next start."""
    try:
        return _process(claimed, outbox, context)
    except OSError as exc:  # the outbox itself fails (full, share gone): the job stays claimed for later
        error = f"{exc.filename or outbox}: {exc.strerror}"
        hint = "Check the outbox's share and free space; the job is tried again later."
        log.error("job.paused", job_id=claimed.job_id, code=OutboxUnavailable.code, error=error, hint=hint)
        if exc.errno in NO_SPACE_ERRNOS:
            _disk_full(context, claimed, f"{error}. {hint}")
        return JobResult(JobOutcome.PAUSED)
    except (DiskFull, ConfigError) as exc:  # the outbox refused status.json; a state folder is a link (the admin's)
        log.error("job.paused", job_id=claimed.job_id, code=exc.code, error=exc.message, hint=exc.hint)
        if isinstance(exc, DiskFull):
            _disk_full(context, claimed, f"{exc.message}. {exc.hint}")
        return JobResult(JobOutcome.PAUSED)
    except Exception as exc:  # per-job boundary around the job's own: never take the process down
        report_failure(log.bind(job_id=claimed.job_id), "job", exc)
        _set_aside(claimed)
        return JobResult(JobOutcome.FAILED)


def _disk_full(context: JobContext, claimed: ClaimedJob, detail: str) -> None:
    tell_trouble(context.trouble, "disk_full", f"job {claimed.job_id} is paused: {detail}")


def _set_aside(claimed: ClaimedJob) -> None:
    """Archive the inputs of a job that failed outside its own boundary, so it is not resumed (or, in a farm,
    republished) forever."""
    try:
        finish_inputs(claimed, "archive")
    except OSError as exc:
        log.error("job.set_aside_failed", job_id=claimed.job_id, error=f"{exc.filename}: {exc.strerror}")
    except ConfigError as exc:
        log.error("job.set_aside_failed", job_id=claimed.job_id, error=exc.message, hint=exc.hint)


def _process(claimed: ClaimedJob, outbox: Path, context: JobContext) -> JobResult:
    request = read_request(claimed.path)
    if request is not None:  # cancelled before it started (a queued farm task, a claimed job resumed): never start it
        status = finish_unstarted(
            claimed,
            outbox,
            request,
            ready_marker=context.ready_marker,
            max_toml_bytes=context.max_job_toml_bytes,
            worker=context.worker,
            device=context.device,
            job_ended=context.job_ended,
        )
        return JobResult(JobOutcome.CANCELLED, status)
    out_dir = outbox_dir_for(outbox, claimed.job_id, claimed.claimed_at)
    remove_leftovers(claimed, out_dir)

    status = _initial_status(claimed, out_dir)
    if context.worker is not None:
        status = status.model_copy(update={"worker": context.worker, "device": context.device})
    status_file = _StatusFile(layout.status_file(out_dir), status, claimed)
    status_file.save()
    cancel = CancelWatch(claimed.path)
    stop = context.should_stop
    running = dataclasses.replace(context, should_stop=lambda: stop() or cancel())
    bound = structlog.contextvars.bound_contextvars(job_id=claimed.job_id, submitted_by=claimed.submitted_by or "")
    with bound, job_log(layout.log_file(out_dir)):
        log.info("job.started", job_name=claimed.name, outbox=str(out_dir), attempt=status_file.status.attempt)
        outcome = JobOutcome.FINISHED
        options = JobOptions()  # job.toml's, once read: the job's callback_url when it ends
        try:
            spec, links = _load(claimed, context)
            options = spec.options
            _run(spec, links, claimed, out_dir, status_file, running, cancel)
        except Interrupted:
            outcome = JobOutcome.CANCELLED if cancel.check_now() else JobOutcome.INTERRUPTED
        except DiskFull as exc:  # the machine's problem, not the job's: pause and try again later
            message = _for_user(exc.info(), claimed).message
            log.error("job.paused", code=exc.code, error=message, hint=exc.hint)
            _disk_full(context, claimed, f"{message}. {exc.hint}")
            outcome = JobOutcome.PAUSED
        except Exception as exc:  # per-job boundary: the job fails, the daemon goes on
            info = report_failure(log, "job", exc, shown=partial(for_user, claimed=claimed))
            status_file.update(error=_for_user(info, claimed), videos=_not_started(status_file.status, claimed))
            outcome = JobOutcome.FAILED
        if outcome is JobOutcome.CANCELLED:
            request = read_request(claimed.path)
            log.info("job.cancel_received", requested_by=request.by if request else "")
            status_file.update(state="cancelled", cancel=request, videos=cancelled_videos(status_file.status.videos))
        if outcome in (JobOutcome.INTERRUPTED, JobOutcome.PAUSED):
            try:
                status_file.save()
            except DiskFull as exc:  # the outbox still refuses: status.json says what it last could
                log.warning("status.write_failed", code=exc.code, error=exc.message)
            log.warning("job.interrupted", progress=round(status_file.status.progress, 3))
            return JobResult(outcome, status_file.status)
        finished = utc_now()
        # A job whose outputs are not all there keeps its inputs (archived, never deleted), so the user can fix and
        # resubmit them: a job that failed as a whole says where they are kept.
        inputs_after = context.inputs_after if status_file.status.recomputed().state == "done" else "archive"
        kept_in: Path | None = None
        if status_file.status.error is not None:
            try:
                kept_in = inputs_destination(claimed, inputs_after, now=finished)
            except (OSError, ConfigError):  # the archive refuses: finish_inputs below says so, and the job pauses
                kept_in = None
            else:
                status_file.update(error=_kept_in(status_file.status.error, claimed, kept_in, context.inbox))
        status_file.update(finished=finished)
        status_file.save()
        final = status_file.status
        done, failed, total = final.counts()
        level = log.info if final.state == "done" else log.warning
        level(f"job.{final.state}", videos_done=done, videos_failed=failed, videos=total)
    # Inputs leave claimed/ only now that status.json and every output are safely written.
    remove_leftovers(claimed, out_dir)
    finish_inputs(claimed, inputs_after, target=kept_in)
    tell_job_ended(context.job_ended, final, options)
    return JobResult(outcome, final)


def _not_started(status: JobStatus, claimed: ClaimedJob) -> list[VideoStatus]:
    """The videos of a job that failed as a whole: those that had not finished are ``not_started``; a job that
    failed before its videos were known (a bad job.toml, no audio) lists the presenters its folder holds."""
    if not status.videos:
        return [VideoStatus(input=name, state="not_started") for name in listed_inputs(claimed.folder)[1]]
    reset = {"state": "not_started", "progress": 0.0, "frames_done": 0, "started": None, "output": None}
    return [v if v.finished_state else v.model_copy(update=reset) for v in status.videos]


def _kept_in(error: ErrorStatus, claimed: ClaimedJob, kept: Path | None, inbox: Path | None) -> ErrorStatus:
    """A whole job's error, its hint saying where its files are kept and how to run them again."""
    if kept is None:
        return error
    where = layout.shown_path(layout.inputs(kept), inbox if inbox is not None else claimed.state_dir.parent)
    more = (
        f"The job's files are kept in {where} (fix them there if they are the cause); then `heygemd retry "
        f"{claimed.job_id}` or the Retry button of its page runs them again."
    )
    return error.model_copy(update={"hint": f"{error.hint} {more}".strip()})


def _initial_status(claimed: ClaimedJob, out_dir: Path) -> JobStatus:
    path = layout.status_file(out_dir)
    if path.is_file():
        previous = read_status(path)
        # host/pid name the process running the job now (a restart resumes what a dead process left).
        return previous.model_copy(
            update={
                "attempt": previous.attempt + 1,
                "state": "queued",
                "error": None,
                "finished": None,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )
    return first_status(claimed)


def _load(claimed: ClaimedJob, context: JobContext) -> tuple[JobSpec, PresenterLinks]:
    """The job's folder and options, the library presenters it names linked into it first (done at the claim; again
    here when a kill cut that short)."""
    links = context.presenters(claimed.path) if context.presenters else read_links(claimed.path) or PresenterLinks()
    spec = load_job(
        claimed.folder,
        job_id=claimed.job_id,
        name=claimed.name,
        ready_marker=context.ready_marker,
        max_toml_bytes=context.max_job_toml_bytes,
    )
    return spec, links


def _run(
    spec: JobSpec,
    links: PresenterLinks,
    claimed: ClaimedJob,
    out_dir: Path,
    status_file: _StatusFile,
    context: JobContext,
    cancel: CancelWatch,
) -> None:
    """Process the job's videos until every one reached done or failed; raises Interrupted when stopped or
    cancelled (``cancel.seen``: the interrupted video is ``cancelled``, its frames so far recorded)."""
    with open_input(spec.audio) as audio_file:  # decoded, then muxed into every output, from this descriptor
        _run_videos(spec, audio_file, claimed, out_dir, status_file, context, cancel, links)


def _run_videos(
    spec: JobSpec,
    audio_file: InputFile,
    claimed: ClaimedJob,
    out_dir: Path,
    status_file: _StatusFile,
    context: JobContext,
    cancel: CancelWatch,
    links: PresenterLinks,
) -> None:
    session = context.session_for(spec.options.engine)
    status_file.update(
        state="processing",
        started=utc_now(),
        engine=session.engine_name,
        ignored=spec.ignored,
        priority=effective(claimed.priority, spec.options.priority),
        audio=AudioStatus(file=spec.audio.name),
        videos=_video_entries(spec, out_dir, status_file.status, spec.options.naming or context.naming, links),
    )
    status_file.save()
    context.heartbeat(f"{claimed.job_id}: decoding audio")
    audio = session.audio(audio_file, should_stop=context.should_stop)
    status_file.update(
        audio=AudioStatus(file=spec.audio.name, duration_s=round(audio.duration, 3)),
        engine_identity=session.engine.identity,
        engine_parameters=session.configure(spec.options.engine_settings()),
    )
    status_file.save()
    log.info("audio.decoded", audio=spec.audio.name, duration_s=round(audio.duration, 3))
    engines = _EnginesOfJob(context, spec, audio_file, session, audio)
    shown = partial(for_user, claimed=claimed, files=links.shown_files())

    for index, video in enumerate(spec.videos):
        entry = status_file.status.videos[index]
        if entry.state in ("done", "failed"):
            continue
        if context.should_stop():
            raise Interrupted("stopped before the next video")
        linked = links.of_file(video.name)
        output = out_dir / entry.output  # type: ignore[operator]
        status_file.update_video(index, state="processing", started=utc_now(), progress=0.0, frames_done=0, error=None)
        status_file.save()
        bound = structlog.contextvars.bound_contextvars(video=video.name)
        with bound, ExitStack() as held:
            log.info("video.started", output=output.name)

            def on_progress(p: VideoProgress, index: int = index, video: Path = video) -> None:
                if p.stage == "render" and status_file.status.first_frame is None:
                    status_file.update(first_frame=utc_now())
                status_file.update_video(
                    index,
                    progress=round(p.fraction, 4),
                    frames_done=p.frames_done,
                    frames_total=p.frames_total if p.stage == "render" else None,
                )
                status_file.save(force=False)
                context.heartbeat(f"{claimed.job_id}: {video.name} {p.stage} {p.fraction:.0%}")

            try:
                # the engine of the video (a library presenter's own, where the job names none): an engine that
                # cannot load fails this video only
                session, audio = engines.for_video(linked)
                # a link, FIFO or device is refused here, naming what it is; the render, the check of its output
                # and a second render all read the video through this one descriptor
                video_file = held.enter_context(open_input(video))
                # a library presenter's file is the library's own (a hard link): one overwritten in place since
                # the claim fails its video, before the render and again before its output is put in place
                unchanged = partial(linked.check, video_file) if linked else None
                if unchanged is not None:
                    unchanged()
                result = session.render(
                    video_file,
                    audio,
                    output,
                    loop_mode=spec.options.loop_mode or (linked.options.loop_mode if linked else None),
                    crf=spec.options.crf,
                    face=linked.options.face if linked else None,
                    on_progress=on_progress,
                    should_stop=context.should_stop,
                    before_publish=unchanged,
                )
            except Interrupted:
                if cancel.seen:
                    status_file.update_video(index, state="cancelled", finished=utc_now(), output=None)
                else:
                    status_file.update_video(index, state="pending", progress=0.0, frames_done=0, started=None)
                raise
            except DiskFull as exc:
                status_file.update_video(
                    index,
                    state="pending",
                    progress=0.0,
                    frames_done=0,
                    started=None,
                    error=_for_user(exc.info(), claimed),
                )
                raise
            except Exception as exc:  # per-video boundary: the video fails, the job goes on
                info = report_failure(log, "video", exc, shown=shown)
                status_file.update_video(index, state="failed", finished=utc_now(), error=_error_status(info))
            else:
                status_file.update_video(
                    index,
                    state="done",
                    finished=utc_now(),
                    progress=1.0,
                    frames_done=result.frames,
                    frames_total=result.frames,
                    face_ratio=round(result.face_ratio, 4),
                    poster=result.poster.name if result.poster and result.poster.is_file() else None,
                    timings={k: round(v, 3) for k, v in result.timings.items()},
                    warnings=[_shown_status(warning, shown) for warning in result.warnings],
                    encoder=result.encoder,
                    cached=result.caches,
                    engine=session.engine_name if session.engine_name != status_file.status.engine else None,
                )
                log.info(
                    "video.done",
                    output=output.name,
                    seconds=round(result.timings["total"], 2),
                    face_ratio=round(result.face_ratio, 3),
                    frames=result.frames,
                )
                for warning in status_file.status.videos[index].warnings:
                    log.warning("video.warning", code=warning.code, warning=warning.message, hint=warning.hint)
                if context.quality.enabled:  # saved with the video's done state, so a page shows both at once
                    _check(
                        index,
                        video_file,
                        audio_file,
                        audio,
                        result,
                        spec,
                        session,
                        status_file,
                        context,
                        claimed,
                        out_dir,
                        unchanged,
                    )
            status_file.save()
    engines.release()


class _EnginesOfJob:
    """The sessions a job's videos render with, each with the job's audio features for it: the job's engine, and
    the engine a library presenter names for itself (its toml) where the job names none."""

    def __init__(
        self, context: JobContext, spec: JobSpec, audio_file: InputFile, session: LipSyncSession, audio: AudioFeatures
    ) -> None:
        self.context, self.spec, self.audio_file = context, spec, audio_file
        self.default = session
        self.features: dict[str, tuple[LipSyncSession, AudioFeatures]] = {session.engine_name: (session, audio)}

    def for_video(self, linked: LinkedPresenter | None) -> tuple[LipSyncSession, AudioFeatures]:
        wanted = self.spec.options.engine or (linked.options.engine if linked else None)
        if wanted is None:
            return self.features[self.default.engine_name]
        session = self.context.session_for(wanted)
        if session.engine_name not in self.features:
            session.configure(self.spec.options.engine_settings())  # this job's settings, not the last job's
            log.info("audio.decoding_for_engine", engine=session.engine_name)
            features = session.audio(self.audio_file, should_stop=self.context.should_stop)
            self.features[session.engine_name] = (session, features)
        return self.features[session.engine_name]

    def release(self) -> None:
        for session, _ in self.features.values():
            session.release()


def _check(
    index: int,
    video: InputFile,
    audio_file: InputFile,
    audio: AudioFeatures,
    result: RenderResult,
    spec: JobSpec,
    session: LipSyncSession,
    status_file: _StatusFile,
    context: JobContext,
    claimed: ClaimedJob,
    out_dir: Path,
    unchanged: Callable[[], None] | None,
) -> None:
    """Check the video just rendered (``review``) and record what the check says; with ``on_review = "retry"``, a
    video to review is rendered once more with another installed engine (the video is saved done once that is
    settled: its output may still change; ``unchanged`` runs before the second output is kept, as before the
    first). The video stays done whatever happens."""

    def progress(done: int, total: int) -> None:
        if context.should_stop():
            raise Interrupted("stopped while the output was checked", path=result.output)
        context.heartbeat(f"{claimed.job_id}: {video.name} check {done / max(total, 1):.0%}")

    def shown(text: str) -> str:  # the output as the outbox names it: <job>/<file>
        return for_user(text, claimed).replace(str(out_dir) + os.sep, out_dir.name + "/")

    checked = review.check_output(audio, result, context.quality, progress=progress, shown=shown)
    status_file.update_video(index, quality=checked.report, quality_error=_error_status(checked.error))
    if not (checked.report and checked.report.review and context.quality.on_review == "retry"):
        return
    options = {
        "loop_mode": spec.options.loop_mode,
        "crf": spec.options.crf,
        "should_stop": context.should_stop,
        "on_progress": lambda p: context.heartbeat(f"{claimed.job_id}: {video.name} retry {p.fraction:.0%}"),
        "before_publish": unchanged,
    }
    retried = review.retry(
        video,
        audio_file,
        result.output,
        session,
        context.session_for,
        context.quality,
        render_options=options,
        progress=progress,
        shown=shown,
    )
    if retried is None:
        return
    second = retried.checked
    status_file.update_video(
        index,
        retry=RetryStatus(
            engine=retried.engine,
            kept=retried.kept,
            quality=second.report if second else None,
            error=_error_status(retried.error or (second.error if second else None)),
        ),
    )
    if retried.kept and second is not None and retried.result is not None:  # the output is the second render now
        status_file.update_video(
            index,
            quality=second.report,
            warnings=[_for_user(warning, claimed) for warning in retried.result.warnings],
            encoder=retried.result.encoder,
        )


def _shown_status(info: ErrorInfo, shown: Callable[[str], str]) -> ErrorStatus:
    """An error or warning as status.json shows it, its files named by ``shown`` (:func:`for_user`)."""
    return ErrorStatus(code=info.code, message=shown(info.message), hint=shown(info.hint))


def _error_status(info: ErrorInfo | None) -> ErrorStatus | None:
    return ErrorStatus.from_info(info) if info is not None else None


def _video_entries(
    spec: JobSpec, out_dir: Path, previous: JobStatus, naming: str, links: PresenterLinks
) -> list[VideoStatus]:
    """One entry per input (a library presenter's file among them, named by its ``presenter``), then one, failed,
    per library presenter that could not be put into the job (:class:`PresenterLinks`). A video that finished in an
    earlier attempt keeps its result: done (when its output is still there) or failed (its input is the same, so it
    would fail the same way). Output names come from ``naming``, checked again here: each a plain name in
    ``out_dir`` that fits in 255 bytes, or the job fails."""
    earlier = {v.input: v for v in previous.videos}
    used: set[str] = set()
    entries = []
    for video in spec.videos:
        try:
            output = unique_output_name(naming, video.stem, used)
        except ValueError as exc:
            raise JobError(
                f"no output name for {video.name}: naming {naming!r} {exc}",
                path=spec.folder,
                hint="Set naming (job.toml, or [outbox] naming) to a file name made of text and {stem} with an "
                'extension, e.g. "{stem}_synced.mp4".',
            ) from None
        before = earlier.get(video.name)
        if before is not None and (
            (before.state == "done" and before.output and (out_dir / before.output).is_file())
            or before.state == "failed"
        ):
            entries.append(before)
            used.add((before.output or output).casefold())
            continue
        linked = links.of_file(video.name)
        entries.append(VideoStatus(input=video.name, output=output, presenter=linked.name if linked else None))
    for failed in links.failed:
        assert failed.error is not None
        before = earlier.get(failed.name)
        entries.append(
            VideoStatus(
                input=failed.name,
                presenter=failed.name,
                state="failed",
                finished=before.finished if before and before.finished else utc_now(),
                error=failed.error,
            )
        )
    return entries


def for_user(text: str, claimed: ClaimedJob, files: Mapping[str, str] | None = None) -> str:
    """``text`` with heygemd's internal claim paths replaced by the job folder as the user dropped it:
    ``<state>/claimed/<id>/input/bob.mp4`` -> ``lesson-01/bob.mp4``, the folder itself -> ``lesson-01/``; ``files``
    names some files of the folder otherwise (a library presenter's: ``anna.mp4`` -> ``presenters/anna.mp4``)."""
    for file, name in (files or {}).items():
        text = text.replace(str(claimed.folder / file), name)
    shown = claimed.name + "/"
    for internal in (str(claimed.folder), str(claimed.path)):
        text = text.replace(internal + os.sep, shown).replace(internal, shown)
    return text


def _for_user(info: ErrorInfo, claimed: ClaimedJob) -> ErrorStatus:
    """The error as status.json shows it: files named inside the job as the user gave it (``lesson/a.mp4``), not
    by heygemd's internal claimed/ path, which moves to the archive afterwards."""
    return ErrorStatus(code=info.code, message=for_user(info.message, claimed), hint=for_user(info.hint, claimed))


def remove_leftovers(claimed: ClaimedJob, out_dir: Path) -> list[Path]:
    """Remove the temporary files a killed heygemd left in this job's outbox and claim folders (status.json,
    outputs, posters, claim.json): only names heygemd makes (``names.is_heygemd_temp``). The job is held by this
    process, so nothing else writes there."""
    removed = remove_temps(out_dir) + remove_temps(claimed.path)
    if removed:
        log.info("job.leftovers_removed", job_id=claimed.job_id, files=", ".join(p.name for p in removed))
    return removed
