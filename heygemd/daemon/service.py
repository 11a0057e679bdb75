"""The long-running process on one host: resume claimed jobs, watch the inbox, claim ready jobs, run them one at a
time (``heygemd run`` and ``heygemd once``). A farm's intake (:mod:`heygemd.farm.intake`) runs the same loop with
a step that publishes instead of rendering.

Signals only set flags (:mod:`heygemd.daemon.lifecycle`): the first SIGTERM (or Ctrl-C) stops taking jobs and
interrupts the current video at its next batch (it is redone on the next start); a second one stops at once.
Either way every claimed job stays recoverable: the next start resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Literal

import structlog

from heygemd.daemon.cancel import read_request
from heygemd.daemon.claims import ClaimedJob, claim, claimed_jobs, held_by, remove_stale_reservations, take_over
from heygemd.daemon.completeness import CompletenessCheck
from heygemd.daemon.jobs import asked_priority
from heygemd.daemon.lifecycle import (
    STOP_POLL_SECONDS,
    Heartbeat,
    Hooks,
    StopFlag,
    Stopping,
    until_stopped,
    warm_sessions,
)
from heygemd.daemon.new_names import NewNames
from heygemd.daemon.notes import read_note, tidy_notes
from heygemd.daemon.outbox import empty_trash, prune_archive
from heygemd.daemon.preparation import JobsFirst, LibraryKeeper, Preparer
from heygemd.daemon.presence import PresenceFile, remove_dead_records, this_process
from heygemd.daemon.presenter_links import Linker
from heygemd.daemon.priority import effective, order_key
from heygemd.daemon.readiness import Candidate, Readiness, ReadinessTracker, ReadyReason, scan_inbox
from heygemd.daemon.schedule import IntakeState, Schedule
from heygemd.daemon.status import utc_now
from heygemd.daemon.systemd import Notifier, watchdog_interval
from heygemd.daemon.waiting import write_waiting
from heygemd.daemon.watching import InboxWatcher
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.engines import installed_names
from heygemd.errors import ConfigError
from heygemd.fsutil import contained, own_dir, own_subdirs, remove_temps
from heygemd.names import shown_name
from heygemd.settings import Settings

log = structlog.get_logger("heygemd.service")

DEBOUNCE_SECONDS = 0.3
DEBOUNCE_MAX_SECONDS = 2.0
"""After an inbox event, wait until events pause for DEBOUNCE_SECONDS (at most DEBOUNCE_MAX_SECONDS) before
rescanning."""

PAUSED_RETRY_SECONDS = 300.0
"""A job that could not go on for a reason of the machine's (disk full, outbox unreachable) is tried again
after this long; meanwhile other jobs run."""


StepAction = Literal["ran", "idle"]


@dataclass(frozen=True)
class Step:
    """What one :meth:`Service.step` did: ran a job (its id and outcome), or found nothing to run (``wait_s``:
    how long until something may become ready by time alone, capped at the rescan interval)."""

    action: StepAction
    job_id: str | None = None
    outcome: JobOutcome | None = None
    wait_s: float = 0.0


RunJob = Callable[[ClaimedJob], JobOutcome]


class Service:
    """The service loop's decisions, one :meth:`step` at a time; time comes in as ``now`` (monotonic seconds).

    Policy of a step: first the oldest claimed job that no other live daemon holds and that is not waiting
    out a pause (at start these are what a previous process left; later, jobs paused on a full disk, retried
    ``paused_retry_s`` after the pause); else the earliest-arrived ready job in the inbox, claimed now. It runs
    to an outcome: paused jobs are retried later while other jobs go on; finished and failed ones are gone.
    ``run_job`` runs one claimed job (the worker, in production); ``clock`` (monotonic seconds) says when it
    ended, as a job can run for a long time after the ``now`` of its step.
    """

    def __init__(
        self,
        settings: Settings,
        run_job: RunJob,
        *,
        once: bool = False,
        paused_retry_s: float = PAUSED_RETRY_SECONDS,
        completeness: CompletenessCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        resume_claimed: bool = True,
        may_claim: Callable[[], bool] = lambda: True,
        schedule: Schedule | None = None,
        presenters: Linker | None = None,
        waits_for: Callable[[Candidate], tuple[str, ...]] = lambda _candidate: (),
    ) -> None:
        self.settings = settings
        self.run_job = run_job
        self.schedule = schedule if schedule is not None else Schedule(settings.paths.state_dir, settings.intake.hours)
        """The rendering hours and the pause: outside the hours or while paused no job starts."""
        self.intake_state: IntakeState | None = None
        """Whether the last step could take jobs (and if not, why)."""
        self.resume_claimed = resume_claimed  # False in a farm's intake: the workers resume claimed jobs
        self.may_claim = may_claim  # a farm's intake claims only while the broker can take the job
        self.presenters = presenters  # links the library presenters a job names into it at its claim
        self.waits_for = waits_for  # what a ready job still waits for in the presenter library (a copy running)
        self._clock = clock  # when a job ended (a pause is counted from then); decisions use step's ``now``
        self._wall_clock = wall_clock  # waiting.json says when a settling job is taken, in UTC
        self.paused_retry_s = float("inf") if once else paused_retry_s
        intake_settings = settings.intake
        self._now = 0.0
        self.tracker = ReadinessTracker(
            intake_settings.settle_seconds,
            ready_marker=intake_settings.ready_marker,
            completeness=completeness if completeness is not None else CompletenessCheck(),
            incomplete_timeout=intake_settings.incomplete_timeout,
            trust_file_times=once,  # a one-shot process has no history of the folders: their file times are it
            clock=lambda: self._now,
        )
        self.retry_at: dict[str, float] = {}
        self.waiting: dict[str, tuple[str, ...]] = {}
        """Per inbox job not yet ready: what it waits for (in-flight or incomplete files), for logs and STATUS=."""
        self.settling: dict[str, float] = {}
        """Per inbox job settling now: when (``now``'s clock) it is taken if nothing in it changes meanwhile."""
        self._settling_at: dict[str, datetime] = {}
        """The same in UTC, as waiting.json says it (moved only when it moves by more than a second)."""
        self._waiting_written: tuple[dict[str, tuple[str, ...]], dict[str, datetime]] | None = None
        self._loose = NewNames(
            log,
            "inbox.loose_file",
            "file",
            "A file directly in the inbox is ignored: put it in a job folder of its own (inbox/<job>/, with the audio "
            "and the presenters).",
            shown_name,
        )
        """Files directly in the inbox: each is logged when it first appears."""
        self._refused: dict[str, str] = {}
        """Per inbox job whose claim was refused: the error last logged (logged again only when it changes)."""
        self._inbox_problem: str | None = None
        """The event last logged for an inbox that could not be scanned (None while it can)."""
        self._bad_names = NewNames(
            log,
            "inbox.bad_name",
            "folder",
            "The folder name is not valid UTF-8; rename it to take it as a job.",
            shown_name,
        )
        """Inbox folders whose names are not UTF-8: each is logged when it first appears."""
        self._held: dict[str, str] = {}
        """Claimed jobs another live process holds, and why (each logged when it is first skipped)."""

    def step(self, now: float) -> Step:
        """Run the next job, if any (see the class docstring), and say what was done."""
        self._now = now
        state = self.intake_state = self.schedule.now()
        claimed = (self._next_claimed(now, taking=state.taking) if self.resume_claimed else None) or (
            self._claim_next_ready(state) if self.may_claim() else None
        )
        self._publish_waiting()
        if claimed is None:
            opens = self.schedule.seconds_until_open(state)
            deadlines = [d for d in (self.tracker.next_deadline(), self._next_retry(now), opens) if d is not None]
            # a deadline of 0.0 (settled just now) must not mean "no deadline"
            return Step("idle", wait_s=max(0.0, min([self.settings.intake.rescan_interval, *deadlines])))
        outcome = self.run_job(claimed)
        if outcome is JobOutcome.PAUSED:
            self.retry_at[claimed.job_id] = self._clock() + self.paused_retry_s
            log.warning("job.retry_later", job_id=claimed.job_id, after_s=self.paused_retry_s)
        elif outcome is not JobOutcome.INTERRUPTED:
            self.retry_at.pop(claimed.job_id, None)
        return Step("ran", job_id=claimed.job_id, outcome=outcome)

    def waiting_text(self) -> str:
        """One line on what the inbox's unready jobs wait for, e.g. for STATUS= ("" when none waits)."""
        state = self.intake_state
        if state is not None and not state.taking:
            return f"not taking jobs: {state.waits_for} ({len(self.waiting)} in the inbox)"
        parts = [f"{name}/{', '.join(files)}" for name, files in sorted(self.waiting.items()) if files]
        return "waiting for " + "; ".join(parts) if parts else ""

    def settling_for(self) -> float | None:
        """Seconds until the first settling job may be taken (None when none settles): ``heygemd once`` waits."""
        return max(0.0, min(self.settling.values()) - self._now) if self.settling else None

    def ready_job(self, now: float) -> str | None:
        """The job a step at ``now`` would run, without claiming it: a claimed job to resume (its id), else the
        ready inbox job that goes first (its name); None when there is none, or the intake takes no job now (a job
        still settling is not ready). A job whose claim was refused at its last try does not count (a presenter's
        preparation would make way for it again and again)."""
        self._now = now
        state = self.schedule.now()
        if self.resume_claimed and (claimed := self._resumable(now, taking=state.taking)) is not None:
            return claimed.job_id
        if not state.taking or not self.may_claim():
            return None
        ready = [c for c in self._ready_candidates() if c.name not in self._refused]
        self._publish_waiting()
        return min(ready, key=self._order).name if ready else None

    def _publish_waiting(self) -> None:
        """Write ``waiting.json`` for ``heygemd status`` and the web pages when what the inbox waits for changed."""
        current = {name: files for name, files in self.waiting.items() if files}
        if (current, self._settling_at) == self._waiting_written:
            return
        try:
            write_waiting(
                self.settings.paths.state_dir,
                current,
                self._settling_at,
                ready_marker=self.settings.intake.ready_marker,
            )
        except OSError as exc:  # a share refusing one write: the log still says it, the next change retries
            log.warning("waiting.write_failed", error=f"{exc.filename}: {exc.strerror}")
            return
        except ConfigError as exc:  # the state folder became a link: never written through
            log.warning("waiting.write_failed", error=exc.message, hint=exc.hint)
            return
        self._waiting_written = (current, dict(self._settling_at))

    def _next_claimed(self, now: float, *, taking: bool = True) -> ClaimedJob | None:
        """The oldest claimed job that no other live daemon is working on and that is not waiting out a pause (a
        paused job with a cancel request does not wait: it is only finished as cancelled), now owned by this
        process. While the intake takes no job (outside the rendering hours, paused: ``taking`` False), only a job
        with a cancel request, which is finished without rendering."""
        claimed = self._resumable(now, taking=taking)
        if claimed is None:
            return None
        log.info(
            "job.retrying" if claimed.job_id in self.retry_at else "job.resuming",
            job_id=claimed.job_id,
            previous_owner=f"{claimed.host}:{claimed.pid}",
        )
        return take_over(claimed)

    def _resumable(self, now: float, *, taking: bool) -> ClaimedJob | None:
        """The claimed job :meth:`_next_claimed` takes over (see there), not taken over yet."""
        claims = claimed_jobs(self.settings.paths.state_dir)
        for gone in set(self._held) - {c.job_id for c in claims}:
            del self._held[gone]
        for claimed in claims:
            waiting = not taking or self.retry_at.get(claimed.job_id, -float("inf")) > now
            if waiting and read_request(claimed.path) is None:
                continue
            holder = held_by(claimed)
            if holder is not None:
                if claimed.job_id not in self._held:
                    log.info("job.held_elsewhere", job_id=claimed.job_id, why=holder)
                self._held[claimed.job_id] = holder
                continue
            self._held.pop(claimed.job_id, None)
            return claimed
        return None

    def _next_retry(self, now: float) -> float | None:
        """Seconds until the next paused job may be tried again, or None when none is paused."""
        pending = [t for t in self.retry_at.values() if t != float("inf")]
        return max(0.0, min(pending) - now) if pending else None

    def _claim_next_ready(self, state: IntakeState | None = None) -> ClaimedJob | None:
        """Scan the inbox, and claim the ready job of the highest priority, the earliest-arrived of those (None if
        none is ready, or the intake takes no job now: ``state``; then the ready jobs wait for it).

        ``waiting`` remembers what each job was last seen waiting for, so the log says once (not at every scan)
        that a job waits, e.g. for a stale ``clip.mp4.part`` that someone must remove, or a presenter still at 0
        bytes.
        """
        ready = self._ready_candidates()
        if state is not None and not state.taking:
            for candidate in ready:
                self.waiting[candidate.name] = (str(state.waits_for),)
            return None
        paths = self.settings.paths
        for candidate in sorted(ready, key=self._order):
            try:
                claimed = claim(candidate, paths.state_dir, outbox=paths.outbox, presenters=self.presenters)
            except OSError as exc:  # e.g. a client still holds a file open on the share (EACCES, EBUSY): retry later
                self._claim_refused(candidate.name, f"{exc.filename}: {exc.strerror}")
                continue
            except ConfigError as exc:  # claimed/ is a link (fsutil.own_dir): never followed; the admin removes it
                self._claim_refused(candidate.name, exc.message, hint=exc.hint)
                continue
            self._refused.pop(candidate.name, None)
            self.tracker.forget(candidate.name)
            self._forget(candidate.name)
            if claimed is not None:
                log.info(
                    "job.claimed",
                    job_id=claimed.job_id,
                    job_name=candidate.name,
                    submitted_by=claimed.submitted_by or "",
                    priority=effective(claimed.priority, asked_priority(claimed.folder)),
                )
                return claimed
        return None

    def _ready_candidates(self) -> list[Candidate]:
        """Scan the inbox and say which jobs are ready to be claimed (none when it cannot be scanned), noting what
        the others wait for."""
        paths = self.settings.paths
        bad_names: list[str] = []
        loose: list[str] = []
        try:
            candidates = scan_inbox(paths.inbox, paths.state_dir, on_bad_name=bad_names.append, on_loose=loose.append)
        except OSError as exc:  # unmounted, stale or unreadable: said once, looked at again at the next scan
            event = "inbox.missing" if isinstance(exc, FileNotFoundError) else "inbox.unreadable"
            if self._inbox_problem != event:
                self._inbox_problem = event
                log.warning(event, inbox=str(paths.inbox), error=exc.strerror, hint="Is the share mounted?")
            return []
        self._inbox_problem = None
        self._bad_names.scanned(bad_names)
        self._loose.scanned(loose)
        self.tracker.retain(c.name for c in candidates)
        present = {c.name for c in candidates}
        for gone in (set(self.waiting) | set(self.settling)) - present:
            self._forget(gone)
        for gone in set(self._refused) - present:
            del self._refused[gone]
        ready = []
        for candidate in candidates:
            try:
                readiness = self.tracker.observe(candidate)
            except OSError as exc:  # unreadable or stale on the share: look again at the next scan
                log.warning("job.unreadable", job_name=candidate.name, error=f"{exc.filename}: {exc.strerror}")
                continue
            self._note_waiting(candidate.name, readiness)
            if readiness.ready and not self._holds_presenters(candidate):
                ready.append(candidate)
        return ready

    def _claim_refused(self, name: str, error: str, *, hint: str = "") -> None:
        """Log that ``name`` could not be claimed, once for as long as the same error repeats at every scan."""
        if self._refused.get(name) != error:
            self._refused[name] = error
            log.warning("job.claim_refused", job_name=name, error=error, **({"hint": hint} if hint else {}))

    def _forget(self, name: str) -> None:
        """``name`` left the inbox (claimed, removed): it waits for nothing any more."""
        self.waiting.pop(name, None)
        self.settling.pop(name, None)
        self._settling_at.pop(name, None)

    def _note_settling(self, name: str, readiness: Readiness) -> None:
        """Remember when a settling job is taken, and say it the first time it settles."""
        if readiness.reason is not ReadyReason.SETTLING:
            self.settling.pop(name, None)
            self._settling_at.pop(name, None)
            return
        intake = self.settings.intake
        if name not in self.settling:
            log.info(
                "job.settling",
                job_name=name,
                taken_in_s=round(readiness.wait_s),
                hint=f"A job is taken once nothing in it changed for intake.settle_seconds ({intake.settle_seconds:g} "
                f"s); create {name}/{intake.ready_marker} to have it taken at once.",
            )
        self.settling[name] = self._now + readiness.wait_s
        at = datetime.fromtimestamp(self._wall_clock() + readiness.wait_s, timezone.utc)
        before = self._settling_at.get(name)
        if before is None or abs((at - before).total_seconds()) > 1.0:
            self._settling_at[name] = at

    def _holds_presenters(self, candidate: Candidate) -> bool:
        """Whether the ready job ``candidate`` names a library presenter still being copied (logged when that
        changes; ``waiting`` says it): it is claimed once the copy is complete."""
        held = self.waits_for(candidate)
        if held and self.waiting.get(candidate.name) != held:
            log.info(
                "job.waiting",
                job_name=candidate.name,
                presenters=", ".join(held),
                hint="The job is taken once these presenters are completely copied into the library.",
            )
        if held:
            self.waiting[candidate.name] = held
        return bool(held)

    def _note_waiting(self, name: str, readiness: Readiness) -> None:
        self._note_settling(name, readiness)
        waiting_for = () if readiness.ready else readiness.waiting_for
        if waiting_for and self.waiting.get(name) != waiting_for:
            if readiness.in_flight:
                log.info(
                    "job.waiting",
                    job_name=name,
                    in_flight=", ".join(f"{name}/{f}" for f in readiness.in_flight),
                    hint="The job is taken once these files are complete (renamed or removed).",
                )
            else:
                incomplete = ", ".join(f"{name}/{f}" for f in readiness.incomplete)
                log.info(
                    "job.waiting",
                    job_name=name,
                    incomplete=incomplete,
                    hint="The job is taken once these files are completely uploaded, or after "
                    f"intake.incomplete_timeout ({self.settings.intake.incomplete_timeout:.0f} s) unchanged.",
                )
        if readiness.reason is ReadyReason.TIMED_OUT:
            log.warning(
                "job.incomplete_timeout",
                job_name=name,
                incomplete=", ".join(f"{name}/{f}" for f in readiness.incomplete),
                hint="Taken although these files look incomplete; they fail with their own errors.",
            )
        self.waiting[name] = waiting_for

    def _order(self, candidate: Candidate) -> tuple[int, float, str]:
        """Which ready job goes first: the highest priority (as changed by an editor, else its job.toml's), then
        the earliest arrived."""
        note = read_note(self.settings.paths.state_dir, candidate.name, candidate.path)
        asked = asked_priority(candidate.path, max_toml_bytes=self.settings.intake.max_job_toml_bytes)
        return order_key(effective(note.priority if note else None, asked), _arrival(candidate), candidate.name)


def _arrival(candidate: Candidate) -> float:
    try:
        return candidate.path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def serve_inbox(settings: Settings, serve: Callable[[Stopping, Notifier], None]) -> int:
    """Run a process that serves the inbox (``heygemd run`` and ``once`` here, a farm's intake) until it is stopped:
    its folders made (a state folder that is a link is refused: heygemd writes only inside its own folders), the
    signals handled (:mod:`heygemd.daemon.lifecycle`). Returns the process exit status."""
    paths = settings.paths
    for folder in (paths.inbox, paths.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    own_dir(paths.state_dir)
    if contained(paths.presenters_dir, paths.inbox):
        raise ConfigError(
            f"the presenter library {paths.presenters_dir} is inside the inbox {paths.inbox}",
            hint="Set paths.presenters to a folder outside the inbox (a folder there would be taken for a job).",
        )
    try:
        paths.presenters_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only models folder: the library stays empty until the folder is made
        log.warning("library.missing", folder=str(paths.presenters_dir), error=exc.strerror or str(exc))
    stop = StopFlag()
    stop.install()
    notifier = Notifier()

    def run() -> int:
        serve(Stopping(stop, notifier), notifier)
        return 0

    return until_stopped(run, notifier)


def run_service(settings: Settings, *, once: bool = False, hooks: Hooks = Hooks()) -> int:
    """``heygemd run`` (once=False) and ``heygemd once`` on a single host, with the ``hooks`` handed in from above.
    Returns the process exit status."""
    return serve_inbox(settings, partial(_serve, settings, once=once, hooks=hooks))


def _serve(settings: Settings, stopping: Stopping, notifier: Notifier, *, once: bool, hooks: Hooks) -> None:
    paths = settings.paths
    started = utc_now()
    log.info(
        "daemon.starting",
        inbox=str(paths.inbox),
        outbox=str(paths.outbox),
        engine=settings.engine.name,
        mode="once" if once else "run",
    )
    sessions = warm_sessions(settings, hooks)
    name = "heygemd once" if once else "heygemd run"
    presence = PresenceFile(
        paths.state_dir,
        lambda: this_process("daemon", name, installed_names(settings.engine, paths.models), started),
    )

    with Heartbeat(notifier, watchdog_interval(), presence=presence) as heartbeat:
        context = JobContext.from_settings(
            settings,
            session_for=sessions.get,
            should_stop=stopping,
            heartbeat=heartbeat.beat,
            job_ended=hooks.job_ended,
            trouble=hooks.trouble,
        )

        def run_job(claimed: ClaimedJob) -> JobOutcome:
            heartbeat.beat(f"job {claimed.job_id}")
            outcome = process_job(claimed, paths.outbox, context).outcome
            sessions.after_job()
            heartbeat.beat(IDLE_TEXT)
            return outcome

        tidy_state(paths.state_dir)
        _remove_cache_temps(paths.cache_dir)
        # the presenter library: prepared here between jobs (``once`` only watches it for the jobs naming it)
        preparer = None if once else Preparer(settings, sessions)
        keeper = LibraryKeeper(settings, preparer, trust_file_times=once, heartbeat=heartbeat.beat)
        service = Service(
            settings, run_job, once=once, presenters=Linker.from_settings(settings), waits_for=keeper.waits_for
        )
        if once:
            serve_once(service, stopping, heartbeat, each_step=keeper.scan)
        else:
            prepare_presenter = preparing_between_jobs(settings, keeper, service, stopping)

            def between_jobs() -> None:
                if prepare_presenter():
                    heartbeat.beat(IDLE_TEXT)
                sessions.unload_if_idle()

            watch_inbox(
                settings,
                service,
                stopping,
                notifier,
                heartbeat,
                idle_text=IDLE_TEXT,
                idle=between_jobs,
                each_round=keeper.scan,
            )


IDLE_TEXT = "idle, watching the inbox"


def preparing_between_jobs(
    settings: Settings, keeper: LibraryKeeper, service: Service, stopping: Callable[[], bool]
) -> Callable[[], bool]:
    """What the loop does when a step found no job: prepare the next queued presenter, interrupted by a stop or by
    a job that becomes ready meanwhile (jobs first: the presenter is queued again and prepared after the job).
    Returns whether a presenter was prepared."""

    def prepare() -> bool:
        return keeper.prepare_next(stopping, yield_to=JobsFirst(service.ready_job, settings.intake.poll_interval))

    return prepare


def serve_once(
    service: Service,
    stopping: Callable[[], bool],
    heartbeat: Heartbeat,
    *,
    each_step: Callable[[], object] = lambda: None,
) -> None:
    """``heygemd once``: every ready job, and every job that settles meanwhile (each said once in the log, with
    when it is taken); then return. Jobs waiting for a file that is still being copied are left (the log says
    which file): they may never complete. ``each_step`` runs before every step (the presenter library's scan)."""
    while not stopping():
        each_step()
        if service.step(time.monotonic()).action == "ran":
            continue
        wait = service.settling_for()
        if wait is None:
            return
        heartbeat.beat(f"waiting {wait:.0f} s for settling jobs: {', '.join(sorted(service.settling))}")
        end = time.monotonic() + wait
        while not stopping() and (left := end - time.monotonic()) > 0:
            heartbeat.beat()
            time.sleep(min(left, STOP_POLL_SECONDS))


def tidy_state(state_dir: Path) -> None:
    """At start: what a killed process left in the state folder (reservations of claims cut short, deletes cut
    short, heartbeat records of renderers that are gone, temporary files such as waiting.json's) goes."""
    remove_stale_reservations(state_dir)
    remove_dead_records(state_dir)
    empty_trash(state_dir)
    remove_temps(state_dir, min_age_s=CACHE_TEMP_MIN_AGE_S)


def watch_inbox(
    settings: Settings,
    service: Service,
    stopping: Stopping,
    notifier: Notifier,
    heartbeat: Heartbeat,
    *,
    idle_text: str,
    idle: Callable[[], None] = lambda: None,
    each_round: Callable[[float], float] = lambda _now: float("inf"),
) -> None:
    """Step ``service`` until a stop is requested, waiting for the inbox to change between idle steps.

    Claimed jobs are resumed only after READY, as one can outlast systemd's start timeout. ``idle`` runs when a
    step found nothing to do (unload an idle engine); ``each_round(now)`` before every step, returning the seconds
    until it wants to run again (a farm's intake republishes lost tasks at each rescan).
    """
    paths, intake_settings = settings.paths, settings.intake
    watcher = InboxWatcher(
        paths.inbox,
        state_dir=paths.state_dir,
        observer=intake_settings.observer,
        poll_interval=intake_settings.poll_interval,
        also=(paths.presenters_dir,),  # a presenter copied in is seen at once, not at the next rescan
    )
    with watcher:
        log.info("daemon.ready", observer=watcher.kind, why=watcher.choice.reason if watcher.choice else "")
        notifier.ready(idle_text)
        while not stopping():
            heartbeat.beat()
            now = time.monotonic()
            due_in = each_round(now)
            step = service.step(now)
            if step.action == "ran":
                continue
            heartbeat.beat(service.waiting_text() or idle_text)
            idle()
            try:
                prune_archive(paths.state_dir, settings.outbox.archive_retention_days)
            except OSError as exc:  # a file held open on the share: pruning waits for a later round
                log.warning("archive.prune_failed", error=f"{exc.filename}: {exc.strerror}")
            tidy_notes(paths.state_dir, paths.inbox)
            wait = min(step.wait_s, max(0.0, now + due_in - time.monotonic()))
            wait_for_change(watcher, stopping, heartbeat, max(wait, 0.05), wake=service.schedule.changed())


def wait_for_change(
    watcher: InboxWatcher,
    stop: Callable[[], bool],
    heartbeat: Heartbeat,
    seconds: float,
    *,
    wake: Callable[[], bool] = lambda: False,
) -> None:
    """Until the inbox changes, ``seconds`` pass, a stop is requested or ``wake()`` is true (the intake was paused
    or resumed; both checked every STOP_POLL_SECONDS).

    A change is followed by a short quiet spell (``DEBOUNCE_SECONDS``, at most ``DEBOUNCE_MAX_SECONDS``): a copy
    makes thousands of events, and the caller rescans once for all of them. Waiting is alive and well: the
    watchdog keeps being fed, whatever ``intake.rescan_interval`` is.
    """
    end = time.monotonic() + seconds
    while not stop():
        heartbeat.beat()
        left = end - time.monotonic()
        if left <= 0 or wake():
            return
        if watcher.wait(min(left, STOP_POLL_SECONDS)):
            settle_until = time.monotonic() + DEBOUNCE_MAX_SECONDS
            while not stop() and time.monotonic() < settle_until and watcher.wait(DEBOUNCE_SECONDS):
                pass
            return


CACHE_TEMP_MIN_AGE_S = 3600.0
"""Temporary files in folders shared by daemons (face cache, state) younger than this may be another's, in use."""


def _remove_cache_temps(cache_dir: Path) -> None:
    """Temporary face-track files a killed heygemd left in the cache (and its sub-folders), once they are old. Links
    are never followed (``remove_temps`` and ``own_subdirs`` skip them)."""
    for folder in (cache_dir, *own_subdirs(cache_dir)):
        remove_temps(folder, min_age_s=CACHE_TEMP_MIN_AGE_S)
