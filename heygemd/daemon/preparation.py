"""Keeping the presenter library prepared: each presenter is prepared once, between jobs, on the renderer.

:class:`LibraryKeeper` is what the service loop runs. Every round it looks at the library folder (:meth:`scan`):
a new or changed file is ``preparing`` -- ``waiting`` while its copy settles (the same rules as an inbox job's files:
unchanged for ``intake.settle_seconds`` and complete, or its ready marker made after it; ``intake.incomplete_timeout``
ends the wait), then ``queued``; a removed one leaves presenters.json (its poster goes, its cache entries are no
longer pinned: evictable like any other). When no job is ready, :meth:`prepare_next` prepares one queued presenter
with :class:`Preparer`: probe, face track, the preparation of every installed engine that has one, a poster; it
ends ``ready`` or ``failed`` with the error a render of it would fail with. Jobs go first: a job that becomes ready
meanwhile (``yield_to``) interrupts it; the presenter is queued again (``waiting_for`` says why) and prepared once
no job is ready, reusing what was finished (the face track and each engine's preparation are cached once
complete). A machine's problem (a full disk, an engine that does not load) leaves it queued, tried again after
``RETRY_SECONDS``.

:meth:`waits_for` tells the service loop which inbox jobs name a presenter whose copy is still running: such a
job is not claimed until the copy is complete.

presenters.json is written by one process at a time: the single host's daemon, or, in a farm, under the library's
lock in the broker (``lock``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import structlog

from heygemd import layout
from heygemd.daemon.completeness import CompletenessCheck
from heygemd.daemon.library import (
    MAX_PRESENTERS,
    LibraryFile,
    LibraryStatus,
    PresenterStage,
    PresenterStatus,
    load_presenter_options,
    named,
    open_presenter_file,
    read_library_status,
    scan_library,
    shown,
    write_library_status,
)
from heygemd.daemon.lifecycle import Sessions
from heygemd.daemon.new_names import NewNames
from heygemd.daemon.presenter_links import named_presenters
from heygemd.daemon.readiness import Candidate, Readiness, ReadinessTracker, ReadyReason, Snapshot
from heygemd.daemon.status import ErrorStatus, utc_now
from heygemd.errors import (
    CheckpointError,
    ConfigError,
    DiskFull,
    HeygemdError,
    Interrupted,
    OutOfMemory,
    ToolMissing,
    report_failure,
)
from heygemd.fsutil import InputFile, remove_temps
from heygemd.names import printable
from heygemd.pipeline import presenter_cache
from heygemd.pipeline.run import VideoProgress, prepare_presenter
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.library")

PROGRESS_WRITE_INTERVAL = 1.0
"""Seconds between presenters.json writes for a preparation's progress alone."""
RETRY_SECONDS = 300.0
"""A preparation stopped by the machine's problem (a full disk, an engine that does not load) is tried again after
this long."""
TEMP_MIN_AGE_S = 3600.0

MACHINE_PROBLEMS: tuple[type[HeygemdError], ...] = (DiskFull, ConfigError, CheckpointError, OutOfMemory, ToolMissing)
"""Errors that are not the presenter's: it stays queued and is tried again later."""

Progress = Callable[[PresenterStage, float], None]
Prepare = Callable[[LibraryFile, Progress, Callable[[], bool]], PresenterStatus]
"""Prepare one presenter (with progress reports and a stop check) and say what it became: ready or failed."""


class JobsFirst:
    """``yield_to`` of a preparation: the job that ``ready_job(now)`` says waits (the single host's
    ``Service.ready_job``: the job a step would run; a farm worker's: a job task waiting in its queues). The
    preparation polls it at every batch; ``ready_job`` is asked once per ``interval`` seconds at most (the intake's
    ``poll_interval``), the first time ``interval`` after this was made (as a step had just found no job)."""

    def __init__(
        self, ready_job: Callable[[float], str | None], interval: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ready_job = ready_job
        self.interval = interval
        self.clock = clock
        self._due = clock() + interval

    def __call__(self) -> str | None:
        now = self.clock()
        if now < self._due:
            return None
        self._due = now + self.interval
        return self.ready_job(now)


class HandOff(Protocol):
    """Where a farm's intake sends a presenter to prepare (a task for the workers), instead of preparing it."""

    def publish(self, found: LibraryFile) -> bool:
        """Send ``found`` to be prepared; False when it could not be sent (tried again at a later round)."""
        ...

    def in_flight(self, name: str) -> bool:
        """Whether the presenter ``name`` is being prepared, or its task waits to be."""
        ...


_STAGES: dict[str, PresenterStage] = {"detect": "detecting", "prepare": "preparing", "poster": "poster"}


class Preparer:
    """Prepares presenters with this process's warm engines (``sessions``): the face track with the default engine's
    detector, and the per-presenter preparation of each installed engine that has one (loaded for it, unloaded
    after, as a job's other engines are)."""

    def __init__(self, settings: Settings, sessions: Sessions, *, prepared_by: str | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.prepared_by = prepared_by or socket.gethostname()

    def __call__(self, found: LibraryFile, progress: Progress, should_stop: Callable[[], bool]) -> PresenterStatus:
        folder = self.settings.paths.presenters_dir
        started = time.monotonic()
        entry = PresenterStatus(name=found.name, file=found.file, identity=found.identity, stage="detecting")
        try:
            options = load_presenter_options(folder, found)
            entry = entry.model_copy(
                update={"display_name": options.display_name, "notes": options.notes, "options": options}
            )
            prepared = self._prepare(found, entry, progress, should_stop)
        except MACHINE_PROBLEMS:
            raise
        except HeygemdError as exc:
            log.error("presenter.failed", presenter=found.name, code=exc.code, error=exc.message, hint=exc.hint)
            prepared = entry.model_copy(update={"state": "failed", "error": ErrorStatus.from_info(exc.info())})
        except Exception as exc:  # per-presenter boundary: it fails, the daemon goes on
            info = report_failure(log.bind(presenter=found.name), "presenter", exc)
            prepared = entry.model_copy(update={"state": "failed", "error": ErrorStatus.from_info(info)})
        finally:
            self.sessions.after_job()
        return prepared.model_copy(
            update={
                "stage": None,
                "progress": 1.0 if prepared.state == "ready" else prepared.progress,
                "prepared": utc_now(),
                "prepared_by": self.prepared_by,
                "seconds": round(time.monotonic() - started, 3),
            }
        )

    def _prepare(
        self, found: LibraryFile, entry: PresenterStatus, progress: Progress, should_stop: Callable[[], bool]
    ) -> PresenterStatus:
        folder = self.settings.paths.presenters_dir
        default = self.sessions.default
        installed = default.installed()
        sessions = [self.sessions.get(name) for name in installed]
        engines = [s.engine for s in sessions if s.spec.needs().presenter_prep]
        layout.posters_root(self.settings.paths.state_dir)
        poster = layout.poster_file(self.settings.paths.state_dir, found.name)

        def report(p: VideoProgress) -> None:
            progress(_STAGES.get(p.stage, "preparing"), p.fraction)

        # errors name the file as users know it (presenters/anna.mp4); it is read through this descriptor only
        with InputFile(shown(folder, found.file), open_presenter_file(folder, found.file)) as video:
            prep = prepare_presenter(
                video,
                engines,
                default.detector,
                options=default.options(face=entry.options.face),
                cache_dir=self.settings.paths.cache_dir,
                poster=poster,
                on_progress=report,
                should_stop=should_stop,
            )
        info = prep.info
        log.info(
            "presenter.ready",
            presenter=found.name,
            face_ratio=round(prep.track.face_ratio, 3),
            face_track="cached" if prep.cached_faces else "computed",
            engines=",".join(installed),
        )
        return entry.model_copy(
            update={
                "state": "ready",
                "duration_s": round(info.duration, 3),
                "width": info.width,
                "height": info.height,
                "fps": round(info.fps, 3),
                "still": info.is_still,
                "face_ratio": round(prep.track.face_ratio, 4),
                "warnings": [ErrorStatus.from_info(w) for w in prep.warnings],
                "engines": list(installed),
                "face_track": "cached" if prep.cached_faces else "computed",
                "cache_files": sorted(p.path.name for p in prep.preparations.values() if p.path is not None),
                "poster": poster.name,
                "timings": {k: round(v, 3) for k, v in prep.timings.items()},
            }
        )


class LibraryKeeper:
    """The library's upkeep for one process (see the module docstring). ``prepare``: how a presenter is prepared
    here (:class:`Preparer`); None: never here (``heygemd once`` only watches the library for the jobs that name it).
    ``hand_off``: a farm's intake sends each presenter to the workers instead (:meth:`prepare_one` there);
    ``trust_file_times``: a file unchanged for ``settle_seconds`` before this process started counts as settled
    (``heygemd once``). ``lock``: held around every read-modify-write of presenters.json (a farm's broker lock;
    nothing on one host)."""

    def __init__(
        self,
        settings: Settings,
        prepare: Prepare | None,
        *,
        hand_off: HandOff | None = None,
        trust_file_times: bool = False,
        clock: Callable[[], float] = time.monotonic,
        lock: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        heartbeat: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.settings = settings
        self.folder = settings.paths.presenters_dir
        self.state_dir = settings.paths.state_dir
        self.prepare = prepare
        self.hand_off = hand_off
        self.trust_file_times = trust_file_times
        self.clock = clock
        self.lock = lock
        self.heartbeat = heartbeat
        self.files: list[LibraryFile] = []
        self.readiness: dict[str, Readiness] = {}
        """Per library file (its name in the folder): whether its copy is complete."""
        self.busy: set[str] = set()
        """Presenters being prepared now (here, or by a task this process published)."""
        self._lost: set[str] = set()
        """Presenters handed off whose task was not seen at the last scan (published again at the next)."""
        self._trackers: dict[str, ReadinessTracker] = {}
        self._retry_at: dict[str, float] = {}
        self._pins: frozenset[str] | None = None
        self._problem: str | None = None
        self._made_folder = False
        self._bad_names = NewNames(
            log,
            "library.bad_name",
            "file",
            "Nothing usable is left of this name (not UTF-8, or only control characters or dots): rename the file to "
            "make it a presenter.",
            printable,
        )
        """Library files whose names make no presenter, each logged once (again once it was gone a round)."""
        self._too_many = False
        """Whether the last scan found more than MAX_PRESENTERS presenters (logged once, when it began)."""
        self._yielded: dict[str, str] = {}
        """Presenters whose preparation made way for a job: why (until their preparation starts again)."""

    # -- looking at the folder

    def scan(self, _now: float | None = None) -> float:
        """Look at the library folder and bring presenters.json up to date. Returns the seconds until something may
        change by time alone: 0 when a presenter waits to be prepared, else when the next copy may have settled."""
        bad_names: list[str] = []
        too_many: list[int] = []
        try:
            self.files = scan_library(
                self.folder,
                ready_marker=self.settings.intake.ready_marker,
                on_bad_name=bad_names.append,
                on_too_many=too_many.append,
            )
        except FileNotFoundError:
            self._make_folder()
            self.files = []
        except OSError as exc:  # a link (never followed), a file, a share that refuses: nothing is prepared
            self.files = []
            self._say_once("library.unreadable", f"{exc.filename}: {exc.strerror}")
            return float("inf")
        self._say_once(None, "")
        self._bad_names.scanned(bad_names)
        if too_many and not self._too_many:
            log.warning(
                "library.too_many",
                folder=str(self.folder),
                passed_over=too_many[0],
                hint=f"A library has at most {MAX_PRESENTERS:,} presenters (the first by name); the other files are "
                "passed over: remove what is not a presenter.",
            )
        self._too_many = bool(too_many)
        self._judge_files()
        self._forget_lost_tasks()
        try:
            with self.lock():
                known = read_library_status(self.state_dir)
                updated = self._reconciled(known)
                if updated.model_dump(exclude={"updated"}) != known.model_dump(exclude={"updated"}):
                    write_library_status(self.state_dir, updated)
                    self._forget_removed(known, updated)
            self._pin(updated)
        except (OSError, ConfigError) as exc:  # the state folder refused a write: looked at again next round
            self._say_once("library.status_write_failed", str(exc))
            return float("inf")
        if any(self._preparable(p) for p in updated.presenters):
            return 0.0
        deadlines = [d for t in self._trackers.values() if (d := t.next_deadline()) is not None]
        retries = [max(0.0, t - self.clock()) for t in self._retry_at.values()]
        return min([*deadlines, *retries], default=float("inf"))

    def _forget_lost_tasks(self) -> None:
        """Presenters handed off whose task is gone (a worker stopped, the broker flushed) at two scans in a row are
        prepared again: handed off at the next round."""
        if self.hand_off is None or not self.busy:
            return
        known = read_library_status(self.state_dir)
        self.busy &= {p.name for p in known.presenters if p.state == "preparing"}  # the others are done
        gone = {name for name in self.busy if not self.hand_off.in_flight(name)}
        for name in gone & self._lost:
            log.warning("presenter.task_lost", presenter=name, hint="Its task is gone: it is sent again.")
            self.busy.discard(name)
        self._lost = gone - self._lost

    def _make_folder(self) -> None:
        if self._made_folder:
            return
        self._made_folder = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("library.missing", folder=str(self.folder), error=exc.strerror or str(exc))
            return
        log.info("library.created", folder=str(self.folder))
        remove_temps(self.folder, min_age_s=TEMP_MIN_AGE_S)

    def _say_once(self, event: str | None, error: str) -> None:
        if event is not None and self._problem != event:
            log.warning(event, folder=str(self.folder), error=error)
        self._problem = event

    def _judge_files(self) -> None:
        present = {f.file for f in self.files}
        for gone in set(self._trackers) - present:
            del self._trackers[gone]
            self.readiness.pop(gone, None)
        intake = self.settings.intake
        for found in self.files:
            tracker = self._trackers.get(found.file)
            if tracker is None:
                tracker = self._trackers[found.file] = ReadinessTracker(
                    intake.settle_seconds,
                    completeness=CompletenessCheck(),
                    incomplete_timeout=intake.incomplete_timeout,
                    trust_file_times=self.trust_file_times,
                    clock=self.clock,
                )
            snapshot = Snapshot(
                entries=((found.file, found.size, found.mtime_ns),),
                in_flight=(),
                has_marker=found.marked,
                has_files=True,
                newest_change_ns=found.changed_ns,
            )
            try:
                self.readiness[found.file] = tracker.judge(found.file, snapshot, self.folder)
            except OSError as exc:  # unreadable on the share right now: looked at again next round
                log.warning("presenter.unreadable", presenter=found.name, error=f"{exc.filename}: {exc.strerror}")
                self.readiness[found.file] = Readiness(ReadyReason.SETTLING)

    def _reconciled(self, known: LibraryStatus) -> LibraryStatus:
        entries = known.by_name()
        return known.model_copy(update={"presenters": [self._entry(f, entries.get(f.name)) for f in self.files]})

    def _entry(self, found: LibraryFile, entry: PresenterStatus | None) -> PresenterStatus:
        """What presenters.json says of ``found`` now."""
        same = entry is not None and entry.identity == found.identity and entry.file == found.file
        if found.problem is not None:
            if same and entry is not None and entry.state == "failed":
                return entry
            log.error("presenter.failed", presenter=found.name, code=found.problem.code, error=found.problem.message)
            return PresenterStatus(
                name=found.name,
                file=found.file,
                identity=found.identity,
                state="failed",
                stage=None,
                error=ErrorStatus.from_info(found.problem),
            )
        if same and entry is not None and (entry.state != "preparing" or found.name in self.busy):
            return entry
        if not same or entry is None:
            entry = self._new_entry(found)
            if entry.state == "failed":
                return entry
        readiness = self.readiness.get(found.file, Readiness(ReadyReason.SETTLING))
        if readiness.ready:
            waiting = self._queued_text(found.name)
            return entry.model_copy(update={"stage": "queued", "progress": 0.0, "waiting_for": waiting})
        return entry.model_copy(update={"stage": "waiting", "progress": 0.0, "waiting_for": _waiting_text(readiness)})

    def _new_entry(self, found: LibraryFile) -> PresenterStatus:
        entry = PresenterStatus(name=found.name, file=found.file, identity=found.identity)
        try:
            options = load_presenter_options(self.folder, found)
        except HeygemdError as exc:
            log.error("presenter.failed", presenter=found.name, code=exc.code, error=exc.message)
            failed = {"state": "failed", "stage": None, "error": ErrorStatus.from_info(exc.info())}
            return entry.model_copy(update=failed)
        log.info("presenter.found", presenter=found.name, file=found.file)
        described = {"display_name": options.display_name, "notes": options.notes, "options": options}
        return entry.model_copy(update=described)

    def _queued_text(self, name: str) -> str | None:
        """What a queued presenter waits for (None: only for its turn)."""
        return self._retry_text(name) or self._yielded.get(name)

    def _retry_text(self, name: str) -> str | None:
        at = self._retry_at.get(name)
        if at is None:
            return None
        return f"tried again in {max(0.0, at - self.clock()):.0f} s (the last try met a problem of the machine's)"

    def _preparable(self, entry: PresenterStatus) -> bool:
        return (
            entry.state == "preparing"
            and entry.stage == "queued"
            and entry.name not in self.busy
            and self._retry_at.get(entry.name, -float("inf")) <= self.clock()
        )

    def _forget_removed(self, before: LibraryStatus, now: LibraryStatus) -> None:
        """Posters of presenters gone from the library (their cache entries are unpinned by :meth:`_pin`)."""
        names = {p.name for p in now.presenters}
        for entry in before.presenters:
            if entry.name not in names:
                log.info("presenter.removed", presenter=entry.name)
                self._retry_at.pop(entry.name, None)
                self._yielded.pop(entry.name, None)
                with contextlib.suppress(OSError):
                    layout.poster_file(self.state_dir, entry.name).unlink(missing_ok=True)

    def _pin(self, status: LibraryStatus) -> None:
        """Pin the cache entries of the presenters in the library (a removed one's become evictable)."""
        wanted = frozenset(f for p in status.presenters if p.state == "ready" for f in p.cache_files)
        if wanted != self._pins:
            presenter_cache.pin(self.settings.paths.cache_dir, wanted)
            self._pins = wanted

    # -- jobs that name presenters

    def waits_for(self, candidate: Candidate) -> tuple[str, ...]:
        """What the inbox job ``candidate`` still waits for in the library: each presenter it names whose copy is not
        complete yet (as ``presenters/anna.mp4: why``); nothing when it names none, or only complete ones."""
        wanted = named_presenters(candidate.path, max_toml_bytes=self.settings.intake.max_job_toml_bytes)
        if not wanted:
            return ()
        held = []
        for _, found in named(self.files, wanted):
            readiness = self.readiness.get(found.file) if found is not None and found.problem is None else None
            if found is not None and readiness is not None and not readiness.ready:
                held.append(f"{shown(self.folder, found.file)}: {_waiting_text(readiness)}")
        return tuple(held)

    # -- preparing

    def prepare_next(
        self, should_stop: Callable[[], bool] = lambda: False, *, yield_to: Callable[[], str | None] = lambda: None
    ) -> bool:
        """Prepare the first queued presenter (library order), or hand it off (a farm's intake); False when there is
        none (or nothing prepares here), or its preparation was interrupted: by ``should_stop``, or by the job
        ``yield_to`` names (polled with ``should_stop``; None while no job is ready)."""
        if self.prepare is None and self.hand_off is None:
            return False
        known = read_library_status(self.state_dir)
        entry = next((p for p in known.presenters if self._preparable(p)), None)
        found = next((f for f in self.files if entry is not None and f.name == entry.name), None)
        if entry is None or found is None or found.identity != entry.identity:
            return False
        if self.hand_off is not None:
            if not self.hand_off.publish(found):
                return False
            self.busy.add(found.name)
            self._update(found.name, waiting_for="sent to the workers")
            return True
        return self._prepare(found, should_stop, yield_to)

    def prepare_one(
        self,
        name: str,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        yield_to: Callable[[], str | None] = lambda: None,
    ) -> bool:
        """Prepare the presenter ``name`` if presenters.json still says it is to be prepared, for the file as it is
        now (a farm worker's task: the intake decided, and a task for a presenter since changed, prepared or removed
        is dropped). Returns whether it prepared (False when interrupted: see :meth:`prepare_next`)."""
        if self.prepare is None:
            return False
        try:
            self.files = scan_library(self.folder, ready_marker=self.settings.intake.ready_marker)
        except (FileNotFoundError, NotADirectoryError):
            return False
        entry = read_library_status(self.state_dir).entry(name)
        found = next((f for f in self.files if f.name == name), None)
        if entry is None or found is None or entry.state != "preparing" or entry.identity != found.identity:
            log.info("presenter.task_dropped", presenter=name, why="it is not to be prepared (any more)")
            return False
        return self._prepare(found, should_stop, yield_to)

    def _prepare(
        self, found: LibraryFile, should_stop: Callable[[], bool], yield_to: Callable[[], str | None] = lambda: None
    ) -> bool:
        assert self.prepare is not None
        self.busy.add(found.name)
        self._yielded.pop(found.name, None)
        ready: list[str] = []  # the job that interrupted the preparation

        def stop() -> bool:
            if should_stop():
                return True
            if not ready and (job := yield_to()) is not None:
                ready.append(job)
            return bool(ready)

        try:
            with self._progress(found) as progress:
                prepared = self.prepare(found, progress, stop)
        except Interrupted:
            why = f"a job is ready: {ready[0]}" if ready else "a stop was requested"
            log.info("presenter.interrupted", presenter=found.name, why=why)
            if ready:
                self._yielded[found.name] = f"jobs first ({why}); prepared once no job is ready"
            self._update(found.name, stage="queued", progress=0.0, waiting_for=self._queued_text(found.name))
            return False
        except MACHINE_PROBLEMS as exc:
            log.error("presenter.paused", presenter=found.name, code=exc.code, error=exc.message, hint=exc.hint)
            self._retry_at[found.name] = self.clock() + RETRY_SECONDS
            self._update(found.name, stage="queued", progress=0.0, waiting_for=self._retry_text(found.name))
            return True
        finally:
            self.busy.discard(found.name)
        self._retry_at.pop(found.name, None)
        self._replace(prepared)
        return True

    @contextlib.contextmanager
    def _progress(self, found: LibraryFile) -> Iterator[Progress]:
        last = 0.0

        def progress(stage: PresenterStage, fraction: float) -> None:
            nonlocal last
            self.heartbeat(f"preparing presenter {found.name}: {stage} {fraction:.0%}")
            now = self.clock()
            if now - last >= PROGRESS_WRITE_INTERVAL:
                last = now
                self._update(found.name, stage=stage, progress=round(min(max(fraction, 0.0), 1.0), 4))

        self._update(found.name, stage="detecting", progress=0.0, waiting_for=None)
        log.info("presenter.preparing", presenter=found.name, file=found.file)
        yield progress

    def _update(self, name: str, **fields: object) -> None:
        """Change fields of one entry of presenters.json (best effort: a refused write is logged)."""
        try:
            with self.lock():
                known = read_library_status(self.state_dir)
                entries = [p.model_copy(update=fields) if p.name == name else p for p in known.presenters]
                write_library_status(self.state_dir, known.model_copy(update={"presenters": entries}))
        except (OSError, ConfigError) as exc:
            log.warning("library.status_write_failed", error=str(exc))

    def _replace(self, prepared: PresenterStatus) -> None:
        """Record a preparation's result, unless the presenter left the library (or changed) meanwhile."""
        try:
            with self.lock():
                known = read_library_status(self.state_dir)
                entries = [prepared if p.name == prepared.name else p for p in known.presenters]
                write_library_status(self.state_dir, known.model_copy(update={"presenters": entries}))
                self._pin(known.model_copy(update={"presenters": entries}))
        except (OSError, ConfigError) as exc:
            log.warning("library.status_write_failed", error=str(exc))


def _waiting_text(readiness: Readiness) -> str:
    """Why a library file is not taken yet, for people."""
    if readiness.incomplete:
        return "still being copied (" + "; ".join(i.partition(": ")[2] for i in readiness.incomplete) + ")"
    if readiness.reason is ReadyReason.SETTLING:
        return f"settling: taken once unchanged for intake.settle_seconds ({readiness.wait_s:.0f} s left)"
    return "still being copied"
