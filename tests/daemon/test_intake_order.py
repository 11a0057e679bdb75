"""Which job the intake takes and when: the highest priority first, then the oldest; nothing starts outside the
rendering hours or while paused (the waiting jobs say why), a job in progress is never stopped for either. One
``Service.step`` at a time on real folders and claims, the wall clock injected (never slept through)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from heygemd.daemon.claims import ClaimedJob, claim
from heygemd.daemon.notes import write_note
from heygemd.daemon.readiness import Candidate
from heygemd.daemon.schedule import Schedule, pause, read_pause, resume
from heygemd.daemon.waiting import read_waiting
from heygemd.daemon.worker import JobOutcome
from heygemd.settings import IntakeSettings, PathsSettings, Settings
from tests.daemon.test_service_step import Runner, make_job, service

TZ = timezone(timedelta(hours=1))


class WallClock:
    """Local time that moves only when the test says so."""

    def __init__(self, hh: int, mm: int = 0) -> None:
        self.now = datetime(2026, 3, 10, hh, mm, tzinfo=TZ)

    def __call__(self) -> datetime:
        return self.now


def settings_with(tmp_path: Path, hours: tuple[str, ...] = ()) -> Settings:
    return Settings(
        paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", models=tmp_path / "models"),
        intake=IntakeSettings(settle_seconds=10.0, rescan_interval=30.0, hours=hours),
    )


def job_with_priority(settings: Settings, name: str, priority: str | None, mtime: float) -> Path:
    files = {"voice.wav": b"RIFF-voice", "a.mp4": b"video-bytes"}
    if priority is not None:
        files["job.toml"] = f'priority = "{priority}"\n'.encode()
    return make_job(settings, name, mtime=mtime, files=files)


def run_all(svc: object, steps: int = 10) -> None:
    for _ in range(steps):
        if svc.step(0.0).action != "ran":  # type: ignore[attr-defined]
            return


def test_the_highest_priority_runs_first_then_the_oldest(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    job_with_priority(settings, "low-oldest", "low", mtime=1_000)
    job_with_priority(settings, "normal-older", None, mtime=2_000)
    job_with_priority(settings, "normal-newer", "normal", mtime=2_500)
    job_with_priority(settings, "high-newest", "high", mtime=3_000)
    job_with_priority(settings, "nine", "9", mtime=3_500)
    runner = Runner()
    run_all(service(settings, runner))
    assert runner.ran == ["nine", "high-newest", "normal-older", "normal-newer", "low-oldest"]


def test_an_editors_change_outranks_job_toml_and_stays_with_its_folder(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    state = settings.paths.state_dir
    job_with_priority(settings, "high", "high", mtime=1_000)
    raised = job_with_priority(settings, "raised", "low", mtime=2_000)
    write_note(state, "raised", raised, priority=9, submitted_by="web anna")
    runner = Runner()
    svc = service(settings, runner)
    ran = svc.step(0.0)
    assert ran.job_id == "raised"
    assert not (state / "notes" / "raised").exists()  # the claim took it over
    runner.ran.clear()

    # a note of a folder since replaced by another of the same name is not that folder's
    old = job_with_priority(settings, "replaced", "low", mtime=3_000)
    write_note(state, "replaced", old, priority=9)
    old.rename(tmp_path / "moved-away")  # (kept, so its inode is not handed to the new folder)
    job_with_priority(settings, "replaced", "low", mtime=3_000)
    run_all(svc)
    assert runner.ran == ["high", "replaced"]


def test_the_claim_records_who_submitted_the_job(tmp_path: Path) -> None:
    import os
    import pwd

    settings = settings_with(tmp_path)
    state = settings.paths.state_dir
    web = job_with_priority(settings, "from-web", None, mtime=1_000)
    write_note(state, "from-web", web, submitted_by="web anna")
    job_with_priority(settings, "from-nas", None, mtime=2_000)
    taken: list[ClaimedJob] = []

    def runner(claimed: ClaimedJob) -> JobOutcome:
        taken.append(claimed)
        return JobOutcome.INTERRUPTED  # stays claimed: its claim.json can be read back

    svc = service(settings, runner)
    svc.step(0.0)
    svc.resume_claimed = False
    svc.step(0.0)
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert [(c.job_id, c.submitted_by) for c in taken] == [("from-web", "web anna"), ("from-nas", f"nas {owner}")]
    from heygemd.daemon.claims import read_claim_record

    assert read_claim_record(taken[0].path).submitted_by == "web anna"


def test_outside_the_hours_a_job_waits_saying_when_and_starts_when_they_open(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, hours=("20:00-07:00",))
    clock = WallClock(18, 30)
    job_with_priority(settings, "lesson", None, mtime=1_000)
    runner = Runner()
    svc = service(settings, runner, schedule=Schedule(settings.paths.state_dir, settings.intake.hours, clock=clock))
    idle = svc.step(0.0)
    assert idle.action == "idle" and runner.ran == []
    assert read_waiting(settings.paths.state_dir) == {"lesson": ["waits for 20:00"]}
    assert svc.waiting_text() == "not taking jobs: waits for 20:00 (1 in the inbox)"
    assert idle.wait_s == settings.intake.rescan_interval  # 90 min away: looked at again at the next rescan
    clock.now = clock.now.replace(hour=19, minute=59, second=50)
    assert svc.step(0.0).wait_s == 10.0  # woken when the hours open
    clock.now = clock.now.replace(hour=20, minute=0, second=0)
    ran = svc.step(0.0)
    assert (ran.action, ran.job_id) == ("ran", "lesson")
    assert read_waiting(settings.paths.state_dir) == {}


def test_a_job_in_progress_when_the_hours_end_finishes_and_the_next_waits(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, hours=("20:00-07:00",))
    clock = WallClock(6, 50)

    def long_job(claimed: ClaimedJob) -> JobOutcome:
        clock.now += timedelta(minutes=30)  # renders past 07:00
        return Runner()(claimed)

    job_with_priority(settings, "first", None, mtime=1_000)
    job_with_priority(settings, "second", None, mtime=2_000)
    svc = service(settings, long_job, schedule=Schedule(settings.paths.state_dir, settings.intake.hours, clock=clock))
    first = svc.step(0.0)
    assert (first.job_id, first.outcome) == ("first", JobOutcome.FINISHED)
    assert svc.step(0.0).action == "idle"
    assert read_waiting(settings.paths.state_dir) == {"second": ["waits for 20:00"]}


def test_paused_nothing_starts_until_resumed_and_the_pause_outlives_the_process(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    state = settings.paths.state_dir
    job_with_priority(settings, "lesson", None, mtime=1_000)
    record = pause(state, "cli anna@gpu-1")
    assert pause(state, "web bob").by == "cli anna@gpu-1"  # pausing again changes nothing
    runner = Runner()
    assert service(settings, runner).step(0.0).action == "idle"
    assert read_waiting(state) == {"lesson": ["paused by cli anna@gpu-1"]}
    restarted = service(settings, runner)  # a new process reads the same state folder
    assert restarted.step(0.0).action == "idle" and runner.ran == []
    assert read_pause(state) == record
    assert resume(state) and not resume(state)
    assert restarted.step(0.0).job_id == "lesson"


def test_paused_a_claimed_job_with_a_cancel_request_is_still_finished(tmp_path: Path) -> None:
    from heygemd.daemon.cancel import write_request

    settings = settings_with(tmp_path)
    state = settings.paths.state_dir
    claimed = claim(Candidate("left", job_with_priority(settings, "left", None, mtime=1_000)), state)
    other = claim(Candidate("other", job_with_priority(settings, "other", None, mtime=2_000)), state)
    assert claimed is not None and other is not None
    write_request(claimed.path, "cli anna@gpu-1")
    pause(state, "cli anna@gpu-1")
    runner = Runner()
    svc = service(settings, runner)
    assert svc.step(0.0).job_id == "left"  # finished as cancelled by the worker, never rendered
    assert svc.step(0.0).action == "idle" and runner.ran == ["left"]


def test_an_unreadable_pause_file_still_pauses(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    state = settings.paths.state_dir
    state.mkdir(parents=True)
    (state / "paused.json").write_bytes(b"\xff not json")
    paused = read_pause(state)
    assert paused is not None and paused.by == ""
    (state / "paused.json").unlink()
    (state / "paused.json").symlink_to("/etc/passwd")
    assert read_pause(state) is not None  # never followed, still a pause
