"""Jobs first: a job that becomes ready while a presenter is being prepared interrupts the preparation, runs, and
the presenter is prepared after it (what finished before the interruption is kept: the face track once complete).
The real service loop (``watch_inbox``), keeper, preparer and pipeline; only the job's render is a stand-in."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from heygemd.daemon.claims import ClaimedJob
from heygemd.daemon.library import LibraryFile, PresenterStage, PresenterStatus, read_library_status
from heygemd.daemon.lifecycle import Heartbeat, Sessions, StopFlag, Stopping
from heygemd.daemon.outbox import finish_inputs
from heygemd.daemon.preparation import JobsFirst, LibraryKeeper, Preparer, Progress
from heygemd.daemon.service import Service, preparing_between_jobs, watch_inbox
from heygemd.daemon.systemd import Notifier
from heygemd.daemon.worker import JobOutcome
from heygemd.settings import Settings
from tests.daemon.daemon_process import Media
from tests.daemon.test_library import Clock, inbox_job, library, make_settings


def anna(settings: Settings) -> PresenterStatus:
    entry = read_library_status(settings.paths.state_dir).entry("anna")
    assert entry is not None
    return entry


class DropsAJob:
    """The real preparer, with a job dropped into the inbox (ready: its marker made) at the first stop check in one
    of the stages ``at`` (None: before any progress was reported, i.e. while the face is being tracked)."""

    def __init__(
        self, settings: Settings, preparer: Preparer, events: list[str], at: set[PresenterStage | None]
    ) -> None:
        self.settings, self.preparer, self.events, self.at = settings, preparer, events, at
        self.stage: PresenterStage | None = None
        self.dropped = False

    def __call__(self, found: LibraryFile, progress: Progress, should_stop: Callable[[], bool]) -> PresenterStatus:
        def report(stage: PresenterStage, fraction: float) -> None:
            self.stage = stage
            progress(stage, fraction)

        def stop() -> bool:
            if not self.dropped and self.stage in self.at:
                self.dropped = True
                inbox_job(self.settings, "lesson", {"lesson.wav": b"RIFF", ".ready": b""})
                self.events.append("job dropped")
            return should_stop()

        self.events.append("preparation started")
        prepared = self.preparer(found, report, stop)
        self.events.append(f"presenter {prepared.state}")
        return prepared


def serve(settings: Settings, prepare: DropsAJob, events: list[str]) -> None:
    """The single host's loop, as ``heygemd run`` wires it, until anna is ready (or it ran too long)."""
    for folder in (settings.paths.inbox, settings.paths.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    flag = StopFlag()
    notifier = Notifier("")
    stopping = Stopping(flag, notifier)
    keeper = LibraryKeeper(settings, prepare)

    def run_job(claimed: ClaimedJob) -> JobOutcome:
        events.append(f"job {claimed.job_id} ran, anna {anna(settings).stage}: {anna(settings).waiting_for}")
        finish_inputs(claimed, "archive")
        return JobOutcome.FINISHED

    service = Service(settings, run_job, waits_for=keeper.waits_for)
    between_jobs = preparing_between_jobs(settings, keeper, service, stopping)
    rounds = 0

    def idle() -> None:
        nonlocal rounds
        rounds += 1
        between_jobs()
        if anna(settings).state != "preparing" or rounds > 20:
            flag.event.set()

    with Heartbeat(notifier, None) as heartbeat:
        watch_inbox(
            settings, service, stopping, notifier, heartbeat, idle_text="idle", idle=idle, each_round=keeper.scan
        )


def test_a_job_ready_during_a_preparation_runs_first_and_the_presenter_is_prepared_after(
    tmp_path: Path, media: Media
) -> None:
    settings = make_settings(tmp_path, settle_seconds=0.0, poll_interval=0.01)
    shutil.copyfile(media.face_a, library(settings) / "anna.mp4")
    events: list[str] = []
    prepare = DropsAJob(settings, Preparer(settings, Sessions(settings)), events, at={None, "detecting"})

    with capture_logs() as logs:
        serve(settings, prepare, events)

    assert events[:2] == ["preparation started", "job dropped"], events
    ran = [e for e in events if e.startswith("job ") and " ran" in e]
    assert len(ran) == 1, events
    assert events.index(ran[0]) < events.index("presenter ready"), events  # the job ran before the preparation ended
    assert "anna queued: jobs first (a job is ready: lesson)" in ran[0]  # presenters.json said why it waits
    assert events[-2:] == ["preparation started", "presenter ready"]  # started again after the job, and finished
    interrupted = [e for e in logs if e["event"] == "presenter.interrupted"]
    assert [(e["presenter"], e["why"]) for e in interrupted] == [("anna", "a job is ready: lesson")]
    entry = anna(settings)
    assert (entry.state, entry.waiting_for) == ("ready", None)
    assert entry.face_track == "computed"  # interrupted mid-detection: nothing of the track was kept


def test_a_preparation_interrupted_after_its_face_track_reuses_it(tmp_path: Path, media: Media) -> None:
    settings = make_settings(tmp_path, settle_seconds=0.0, poll_interval=0.01)
    shutil.copyfile(media.face_a, library(settings) / "anna.mp4")
    events: list[str] = []
    prepare = DropsAJob(settings, Preparer(settings, Sessions(settings)), events, at={"preparing", "poster"})

    serve(settings, prepare, events)

    assert "job dropped" in events and events[-1] == "presenter ready", events
    assert sum(e.startswith("job ") and " ran" in e for e in events) == 1
    assert anna(settings).face_track == "cached"  # the track finished before the job came: not computed again


def test_the_inbox_is_looked_at_once_per_poll_interval_while_preparing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, settle_seconds=0.0, poll_interval=10.0)
    clock = Clock()
    service = Service(settings, lambda _claimed: JobOutcome.FINISHED, clock=clock)
    jobs_first = JobsFirst(service.ready_job, settings.intake.poll_interval, clock=clock)
    inbox_job(settings, "lesson", {"lesson.wav": b"RIFF", ".ready": b""})

    assert jobs_first() is None  # not looked at: a step has just found no job
    clock.t = 9.9
    assert jobs_first() is None
    clock.t = 10.0
    assert jobs_first() == "lesson"
    clock.t = 15.0
    assert jobs_first() is None  # looked at 5 s ago
    clock.t = 20.0
    assert jobs_first() == "lesson"  # never taken by the check itself: the next step claims it
    assert service.step(clock()).job_id is not None


def test_a_job_only_settling_does_not_interrupt(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, poll_interval=1.0)  # settle_seconds 10: a job without marker settles
    clock = Clock()
    service = Service(settings, lambda _claimed: JobOutcome.FINISHED, clock=clock)
    jobs_first = JobsFirst(service.ready_job, settings.intake.poll_interval, clock=clock)
    inbox_job(settings, "lesson", {"lesson.wav": b"RIFF"})
    clock.t = 1.0
    assert jobs_first() is None
    clock.t = 11.0
    assert jobs_first() == "lesson"
