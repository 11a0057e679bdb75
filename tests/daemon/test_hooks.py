"""The hooks a process hands in from above (daemon.hooks): every end of a job is told once, after its status.json is
final and its inputs have left the claim, with job.toml's options (the callback_url); a full disk that pauses a job
is told as trouble; a hook that fails never fails the job; an engine that fails to load is told and stops the
process."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

from heygemd.control import Control
from heygemd.daemon.hooks import Trouble
from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.lifecycle import Hooks, warm_sessions
from heygemd.daemon.status import JobStatus, read_status
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import CheckpointError, DiskFull, Interrupted
from heygemd.settings import EngineSettings, PathsSettings, Settings
from tests.daemon.test_worker import StandInSession, claim_job

HOOK = "https://hooks.example.com/lesson?token=s3cret"


class Told:
    """Records what the hooks are told."""

    def __init__(self) -> None:
        self.ended: list[tuple[JobStatus, JobOptions]] = []
        self.trouble: list[tuple[Trouble, str]] = []

    def job_ended(self, status: JobStatus, options: JobOptions) -> None:
        self.ended.append((status, options))

    def saw_trouble(self, kind: Trouble, detail: str) -> None:
        self.trouble.append((kind, detail))

    def context(self, session: StandInSession) -> JobContext:
        return JobContext(
            session_for=lambda _engine: session,  # type: ignore[arg-type, return-value]
            job_ended=self.job_ended,
            trouble=self.saw_trouble,
        )


def with_toml(claimed_folder: Path, text: str) -> None:
    (claimed_folder / "job.toml").write_text(text, encoding="utf-8")


def test_a_finished_job_is_told_once_with_its_final_status_and_callback_url(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])
    with_toml(claimed.folder, f'callback_url = "{HOOK}"\n')
    told = Told()
    result = process_job(claimed, tmp_path / "outbox", told.context(StandInSession()))
    assert result.outcome is JobOutcome.FINISHED
    ((status, options),) = told.ended
    assert status == result.status and status.state == "done" and status.finished is not None
    assert status == read_status(tmp_path / "outbox" / "lesson" / "status.json"), "told once status.json is final"
    assert options.callback_url == HOOK
    assert not claimed.path.exists(), "told once the inputs have left the claim"


def test_a_job_that_cannot_be_read_is_told_failed_without_options(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])
    with_toml(claimed.folder, f'callback_url = "{HOOK}"\ncrf = 99\n')
    told = Told()
    process_job(claimed, tmp_path / "outbox", told.context(StandInSession()))
    ((status, options),) = told.ended
    assert status.state == "failed" and status.error is not None and status.error.code == "BAD_JOB"
    assert options == JobOptions(), "a job.toml that fails the job is not trusted for its callback_url either"


def test_a_cancelled_job_is_told_with_its_options(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])
    with_toml(claimed.folder, f'callback_url = "{HOOK}"\n')
    (claimed.path / "cancel.json").write_text('{"requested": "2026-01-05T09:00:00Z", "by": "test"}')
    told = Told()
    result = process_job(claimed, tmp_path / "outbox", told.context(StandInSession()))
    assert result.outcome is JobOutcome.CANCELLED
    ((status, options),) = told.ended
    assert status.state == "cancelled" and options.callback_url == HOOK


def test_a_paused_or_interrupted_job_is_not_told_ended_and_a_full_disk_is_trouble(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])
    full = DiskFull("no space left on device", path=tmp_path / "outbox")
    told = Told()
    session = StandInSession(failures={"a.mp4": [full, Interrupted("stopped")]})
    assert process_job(claimed, tmp_path / "outbox", told.context(session)).outcome is JobOutcome.PAUSED
    assert process_job(claimed, tmp_path / "outbox", told.context(session)).outcome is JobOutcome.INTERRUPTED
    assert told.ended == []
    ((kind, detail),) = told.trouble
    assert kind == "disk_full" and detail.startswith("job lesson is paused: ") and "no space left" in detail
    assert process_job(claimed, tmp_path / "outbox", told.context(session)).outcome is JobOutcome.FINISHED
    assert [status.state for status, _ in told.ended] == ["done"]


def test_a_hook_that_fails_is_logged_and_the_job_still_ends(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4"])

    def broken(status: JobStatus, options: JobOptions) -> None:
        raise OSError(28, "No space left on device")

    context = JobContext(session_for=lambda _engine: StandInSession(), job_ended=broken)  # type: ignore[arg-type, return-value]
    with structlog.testing.capture_logs() as logs:
        result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.FINISHED and result.status is not None and result.status.state == "done"
    assert [e["event"] for e in logs if e["event"].startswith("job.") and e["log_level"] == "error"] == [
        "job.end_not_told"
    ]


def test_a_job_cancelled_at_once_from_the_inbox_is_told(tmp_path: Path) -> None:
    settings = Settings(paths=PathsSettings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox"))
    job = tmp_path / "inbox" / "lesson"
    job.mkdir(parents=True)
    for name in ("voice.wav", "a.mp4"):
        (job / name).write_bytes(b"x")
    (job / "job.toml").write_text(f'callback_url = "{HOOK}"\n', encoding="utf-8")
    told = Told()
    answer = Control(settings, job_ended=told.job_ended).cancel("lesson", by="test")
    assert answer.state == "cancelled"
    ((status, options),) = told.ended
    assert status.state == "cancelled" and status.job_id == "lesson" and options.callback_url == HOOK


def test_an_engine_that_fails_to_load_is_told_and_raised(tmp_path: Path) -> None:
    settings = Settings(
        paths=PathsSettings(inbox=tmp_path / "in", outbox=tmp_path / "out", models=tmp_path / "models"),
        engine=EngineSettings(name="wav2lip", device="cpu"),  # no checkpoint in models/
    )
    told = Told()
    watched: list[object] = []
    hooks = Hooks(trouble=told.saw_trouble, sessions=watched.append)
    with pytest.raises(CheckpointError) as raised:
        warm_sessions(settings, hooks)
    ((kind, detail),) = told.trouble
    assert kind == "engine_failed"
    assert detail.startswith("engine wav2lip on cpu: [BAD_CHECKPOINT] ") and raised.value.message in detail
    assert len(watched) == 1, "the metrics watch the sessions before the engine loads"
