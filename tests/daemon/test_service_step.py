"""The service loop's policy, one ``Service.step(now)`` at a time: claimed jobs before new ones, oldest first; a
paused job is retried after the pause while others go on; ready jobs in arrival order; ``once`` steps until
nothing is ready; a stalled upload is not taken until complete or timed out. Real folders, real claims; the job
runner is a stand-in that reports an outcome."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from heygemd.daemon.claims import ClaimedJob, claim, claimed_jobs
from heygemd.daemon.completeness import CompletenessCheck
from heygemd.daemon.outbox import finish_inputs
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.service import PAUSED_RETRY_SECONDS, Service
from heygemd.daemon.worker import JobOutcome
from heygemd.settings import IntakeSettings, PathsSettings, Settings

SETTLE = 10.0


class Clock:
    """Monotonic seconds that move only when the test (or a stand-in job) says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Runner:
    """Stands in for the worker: records the jobs it is given and ends each with the next scripted outcome
    (FINISHED by default), ``duration`` seconds of ``clock`` later; finished and failed jobs leave claimed/ as
    the worker's do."""

    def __init__(
        self, script: dict[str, list[JobOutcome]] | None = None, *, clock: Clock | None = None, duration: float = 0.0
    ) -> None:
        self.script = script or {}
        self.ran: list[str] = []
        self.clock, self.duration = clock, duration

    def __call__(self, claimed: ClaimedJob) -> JobOutcome:
        self.ran.append(claimed.job_id)
        if self.clock is not None:
            self.clock.t += self.duration
        outcomes = self.script.get(claimed.job_id)
        outcome = outcomes.pop(0) if outcomes else JobOutcome.FINISHED
        if outcome in (JobOutcome.FINISHED, JobOutcome.FAILED):
            finish_inputs(claimed, "archive")
        return outcome


def make_settings(tmp_path: Path, **intake: float) -> Settings:
    return Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        intake=IntakeSettings(settle_seconds=SETTLE, rescan_interval=30.0, **intake),
    )


def make_job(
    settings: Settings,
    name: str,
    *,
    marker: bool = True,
    mtime: float | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    folder = settings.paths.inbox / name
    folder.mkdir(parents=True)
    for fname, data in (files or {"voice.wav": b"RIFF-voice", "a.mp4": b"video-bytes"}).items():
        (folder / fname).write_bytes(data)
    if marker:
        (folder / ".ready").touch()
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def service(settings: Settings, runner: Callable[[ClaimedJob], JobOutcome], **options: object) -> Service:
    clock = getattr(runner, "clock", None) or Clock()
    return Service(
        settings,
        runner,
        completeness=CompletenessCheck(lease=None),
        clock=clock,  # type: ignore[arg-type]
        **options,
    )


def test_ready_jobs_run_in_arrival_order_one_per_step(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_job(settings, "b-first", mtime=1_000)
    make_job(settings, "a-second", mtime=2_000)
    runner = Runner()
    svc = service(settings, runner)
    first = svc.step(0.0)
    assert (first.action, first.job_id, first.outcome) == ("ran", "b-first", JobOutcome.FINISHED)
    assert svc.step(0.0).job_id == "a-second"
    idle = svc.step(0.0)
    assert idle.action == "idle" and idle.wait_s == settings.intake.rescan_interval
    assert runner.ran == ["b-first", "a-second"]


def test_claimed_jobs_come_before_new_ones_oldest_claim_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    state = settings.paths.state_dir
    for name in ("older", "newer"):  # what a killed process left claimed
        claim(Candidate(name, make_job(settings, name)), state, outbox=settings.paths.outbox)
    make_job(settings, "fresh")
    runner = Runner()
    svc = service(settings, runner)
    while svc.step(0.0).action == "ran":
        pass
    assert runner.ran == ["older", "newer", "fresh"]


def test_a_paused_job_is_retried_after_the_pause_while_others_go_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_job(settings, "disk-full", mtime=1_000)
    make_job(settings, "other", mtime=2_000)
    clock = Clock()
    runner = Runner({"disk-full": [JobOutcome.PAUSED]}, clock=clock, duration=100.0)  # each job takes 100 s
    svc = service(settings, runner)
    paused = svc.step(clock())
    assert (paused.job_id, paused.outcome) == ("disk-full", JobOutcome.PAUSED)  # it ended at t=100
    assert [j.job_id for j in claimed_jobs(settings.paths.state_dir)] == ["disk-full"]  # stays claimed
    assert svc.step(clock()).job_id == "other"  # meanwhile the next job runs, until t=200
    waiting = svc.step(clock())
    assert waiting.action == "idle" and waiting.wait_s == pytest.approx(min(30.0, PAUSED_RETRY_SECONDS - 100))
    assert svc.step(100.0 + PAUSED_RETRY_SECONDS - 1).action == "idle"  # the pause counts from the job's end
    retried = svc.step(100.0 + PAUSED_RETRY_SECONDS)
    assert (retried.job_id, retried.outcome) == ("disk-full", JobOutcome.FINISHED)
    assert runner.ran == ["disk-full", "other", "disk-full"] and not svc.retry_at


def test_once_tries_a_paused_job_once_and_ends_when_nothing_is_ready(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_job(settings, "disk-full")
    runner = Runner({"disk-full": [JobOutcome.PAUSED, JobOutcome.PAUSED]})
    svc = service(settings, runner, once=True)
    steps = []
    while (step := svc.step(0.0)).action == "ran":
        steps.append(step.outcome)
    assert steps == [JobOutcome.PAUSED] and runner.ran == ["disk-full"]


def test_once_judges_settling_by_file_times_and_ctime_counts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    old = make_job(settings, "copied-earlier", marker=False)
    for f in old.iterdir():
        os.utime(f, (1_000, 1_000))  # mtimes are old; the ctime is now: it is not settled yet
    runner = Runner()
    assert service(settings, runner, once=True).step(0.0).action == "idle"
    assert runner.ran == []


def test_an_unsettled_job_waits_and_step_says_for_how_long(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_job(settings, "settling", marker=False)
    runner = Runner()
    svc = service(settings, runner)
    step = svc.step(50.0)
    assert step.action == "idle" and step.wait_s == pytest.approx(SETTLE)
    assert svc.step(50.0 + SETTLE - 0.1).action == "idle"
    assert svc.step(50.0 + SETTLE).job_id == "settling"


def test_a_stalled_upload_is_claimed_only_when_complete(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, incomplete_timeout=600.0)
    job = make_job(settings, "lesson-01", marker=False, files={"voice.wav": b"RIFF-voice", "bob.mp4": b""})
    runner = Runner()
    svc = service(settings, runner)
    for now in (0.0, 100.0, 599.0):
        assert svc.step(now).action == "idle"
    assert svc.waiting == {"lesson-01": ("bob.mp4: 0 bytes so far",)}
    assert svc.waiting_text() == "waiting for lesson-01/bob.mp4: 0 bytes so far"
    (job / "bob.mp4").write_bytes(b"video-bytes")  # the upload lands: settled once unchanged
    assert svc.step(599.5).action == "idle"
    assert svc.step(599.5 + SETTLE).job_id == "lesson-01" and svc.waiting == {}


def test_a_ready_job_is_claimed_at_once_whatever_its_files_look_like(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, incomplete_timeout=600.0)
    make_job(settings, "lesson-01", files={"voice.wav": b"RIFF-voice", "bob.mp4": b""})  # with .ready
    assert service(settings, Runner()).step(0.0).job_id == "lesson-01"  # bob.mp4 fails with its own error


def test_a_stalled_upload_is_claimed_after_the_timeout(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, incomplete_timeout=600.0)
    make_job(settings, "lesson-02", marker=False, files={"voice.wav": b"RIFF-voice", "bob.mp4": b""})
    runner = Runner()
    svc = service(settings, runner)
    assert svc.step(0.0).action == "idle"
    step = svc.step(SETTLE)
    assert step.action == "idle" and step.wait_s == pytest.approx(min(30.0, 600.0 - SETTLE))
    assert svc.step(599.0).action == "idle"
    assert svc.step(600.0).job_id == "lesson-02"  # taken: bob.mp4 fails with its own error in the worker


def test_status_shows_which_file_an_inbox_job_waits_for(tmp_path: Path) -> None:
    from heygemd.status_view import show_status

    settings = make_settings(tmp_path, incomplete_timeout=600.0)
    job = make_job(settings, "lesson-01", marker=False, files={"voice.wav": b"RIFF-voice", "bob.mp4": b""})
    svc = service(settings, Runner())
    assert svc.step(0.0).action == svc.step(SETTLE).action == "idle"
    text = show_status(settings.paths.outbox, None, settings.paths.state_dir)
    assert "lesson-01/" in text and "bob.mp4: 0 bytes so far" in text
    assert show_status(settings.paths.outbox, "lesson-01", settings.paths.state_dir) == (
        "lesson-01/ is still in the inbox, waiting for: bob.mp4: 0 bytes so far\n"
    )
    (job / "bob.mp4").write_bytes(b"video-bytes")
    assert svc.step(SETTLE + 1).action == "idle"
    assert svc.step(2 * SETTLE + 1).job_id == "lesson-01"
    assert "bob.mp4" not in show_status(settings.paths.outbox, None, settings.paths.state_dir)


def test_status_shows_the_priority_of_the_jobs_waiting_in_the_inbox(tmp_path: Path) -> None:
    """`heygemd priority JOB high` changes a job that waits: the table of waiting jobs says what it is now."""
    from heygemd.daemon.notes import write_note
    from heygemd.status_view import show_status

    settings = make_settings(tmp_path, incomplete_timeout=600.0)
    empty = {"voice.wav": b"RIFF-voice", "bob.mp4": b""}
    make_job(settings, "asked-low", marker=False, files={**empty, "job.toml": b'priority = "low"\n'})
    changed = make_job(settings, "changed-high", marker=False, files={**empty, "job.toml": b'priority = "low"\n'})
    make_job(settings, "plain", marker=False, files=empty)
    write_note(settings.paths.state_dir, "changed-high", changed, priority=8)  # what `heygemd priority` writes
    svc = service(settings, Runner())
    assert svc.step(0.0).action == svc.step(SETTLE).action == "idle"
    text = show_status(settings.paths.outbox, None, settings.paths.state_dir, inbox=settings.paths.inbox)
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.endswith("0 bytes so far")}
    assert rows == {"asked-low/": "low", "changed-high/": "high", "plain/": "normal"}, text
    assert "WAITING IN THE INBOX  PRIORITY  FOR" in text, text


def test_a_paused_job_with_a_cancel_request_does_not_wait_out_its_pause(tmp_path: Path) -> None:
    from heygemd.daemon.cancel import write_request

    settings = make_settings(tmp_path)
    make_job(settings, "disk-full")
    runner = Runner({"disk-full": [JobOutcome.PAUSED, JobOutcome.CANCELLED]})
    svc = service(settings, runner)
    assert svc.step(0.0).outcome is JobOutcome.PAUSED
    assert svc.step(1.0).action == "idle"  # waiting out its pause
    (claimed,) = claimed_jobs(settings.paths.state_dir)
    write_request(claimed.path, "test")
    cancelled = svc.step(2.0)
    assert (cancelled.job_id, cancelled.outcome) == ("disk-full", JobOutcome.CANCELLED)
    assert not svc.retry_at


def test_a_linked_claim_folder_stops_no_step_and_is_logged_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    make_job(settings, "lesson")
    outside = tmp_path / "outside"
    outside.mkdir()
    settings.paths.state_dir.mkdir(parents=True)
    (settings.paths.state_dir / "claimed").symlink_to(outside)
    runner = Runner()
    svc = service(settings, runner)
    with structlog.testing.capture_logs() as logs:
        steps = [svc.step(now).action for now in (0.0, 1.0, 2.0)]
    assert steps == ["idle", "idle", "idle"] and runner.ran == []
    refused = [e for e in logs if e["event"] == "job.claim_refused"]
    assert len(refused) == 1 and "claimed: is a symbolic link" in refused[0]["error"]
    assert (settings.paths.inbox / "lesson").is_dir() and list(outside.iterdir()) == []


def test_a_settling_job_is_said_once_with_when_it_is_taken_and_recorded_for_status(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from heygemd.daemon.waiting import read_waiting_jobs

    settings = make_settings(tmp_path)
    job = make_job(settings, "lesson-02", marker=False)
    wall = Clock()
    wall.t = 1_000_000.0
    svc = service(settings, Runner(), wall_clock=wall)
    with structlog.testing.capture_logs() as logs:
        assert svc.step(0.0).action == "idle"
        wall.t += 4.0
        assert svc.step(4.0).action == "idle"
    settling = [e for e in logs if e["event"] == "job.settling"]
    assert len(settling) == 1 and settling[0]["job_name"] == "lesson-02" and settling[0]["taken_in_s"] == SETTLE
    assert "create lesson-02/.ready to have it taken at once" in settling[0]["hint"]
    assert svc.settling_for() == pytest.approx(SETTLE - 4.0)
    recorded = read_waiting_jobs(settings.paths.state_dir)
    assert recorded.settling == {"lesson-02": datetime.fromtimestamp(1_000_000.0 + SETTLE, timezone.utc)}
    assert recorded.jobs == {} and recorded.ready_marker == ".ready"

    (job / "more.mp4").write_bytes(b"a file copied later: the timer starts again")
    wall.t += 2.0
    assert svc.step(6.0).action == "idle"
    assert read_waiting_jobs(settings.paths.state_dir).settling["lesson-02"] == datetime.fromtimestamp(
        1_000_006.0 + SETTLE, timezone.utc
    )
    assert svc.step(6.0 + SETTLE).job_id == "lesson-02"
    assert svc.settling_for() is None and read_waiting_jobs(settings.paths.state_dir).settling == {}


def test_a_file_in_the_inbox_root_is_said_once_and_never_taken(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.paths.inbox.mkdir(parents=True)
    (settings.paths.inbox / "lesson.mp3").write_bytes(b"speech dropped outside any job folder")
    (settings.paths.inbox / ".DS_Store").write_bytes(b"junk: never said")
    runner = Runner()
    svc = service(settings, runner)
    with structlog.testing.capture_logs() as logs:
        steps = [svc.step(now).action for now in (0.0, 1.0, 2.0)]
    assert steps == ["idle"] * 3 and runner.ran == []
    loose = [e for e in logs if e["event"] == "inbox.loose_file"]
    assert len(loose) == 1 and loose[0]["file"] == "lesson.mp3"
    assert "put it in a job folder of its own" in loose[0]["hint"]
