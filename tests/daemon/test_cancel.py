"""Cancelling a job, at the daemon's level: the request file, a job cancelled before it starts (in the inbox, or
claimed and not yet taken by a worker), a job cancelled between two videos, and the errors. The real daemon
process is driven in test_daemon_cancel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heygemd import logs
from heygemd.daemon import cancel, claims, readiness
from heygemd.daemon.status import read_status
from heygemd.daemon.waiting import read_waiting
from heygemd.daemon.worker import JobContext, JobOutcome, process_job
from heygemd.errors import AlreadyFinished, Interrupted, JobNotFound
from heygemd.fsutil import InputFile
from heygemd.layout import CANCEL_FILE, WAITING_FILE
from heygemd.pipeline.run import RenderResult
from tests.daemon.test_jobs import unblocked
from tests.daemon.test_worker import StandInSession, claim_job


def cancel_in(root: Path, job_id: str) -> cancel.CancelAnswer:
    return cancel.cancel_job(
        job_id,
        inbox=root / "inbox",
        outbox=root / "outbox",
        state_dir=root / "inbox" / ".heygemd",
        ready_marker=".ready",
        by="test",
    )


def test_a_job_waiting_in_the_inbox_is_cancelled_at_once_and_its_inputs_archived(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "lesson"
    folder.mkdir(parents=True)
    for name in ("voice.wav", "a.mp4", "b.mp4"):
        (folder / name).write_bytes(b"x")

    answer = cancel_in(tmp_path, "lesson")

    assert (answer.job_id, answer.state) == ("lesson", "cancelled")
    assert not folder.exists(), "the job left the inbox: it can never start"
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert status.state == "cancelled" and status.finished is not None
    assert [(v.input, v.state, v.output) for v in status.videos] == [
        ("a.mp4", "cancelled", None),
        ("b.mp4", "cancelled", None),
    ]
    assert status.audio is not None and status.audio.file == "voice.wav"
    assert status.cancel is not None and status.cancel.by == "test"
    archived = sorted(p.name for p in (tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson/input/*"))
    assert archived == ["a.mp4", "b.mp4", "voice.wav"], "the inputs are archived, as a failed job's are"

    with pytest.raises(AlreadyFinished) as done:
        cancel_in(tmp_path, "lesson")
    assert done.value.code == "ALREADY_DONE" and "'lesson' is already cancelled" in done.value.message


def test_an_unknown_job_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "inbox" / ".heygemd").mkdir(parents=True)
    for job_id in ("nope", "../etc", ".heygemd", ""):
        with pytest.raises(JobNotFound) as missing:
            cancel_in(tmp_path, job_id)
        assert missing.value.code == "NO_SUCH_JOB" and missing.value.hint


def test_cancelling_a_waiting_job_with_a_fifo_job_toml_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "lesson"
    folder.mkdir(parents=True)
    for name in ("voice.wav", "a.mp4"):
        (folder / name).write_bytes(b"x")
    os.mkfifo(folder / "job.toml")
    toml = tmp_path / "inbox" / ".heygemd" / "claimed" / "lesson" / "input" / "job.toml"  # where the claim puts it

    answer = unblocked(toml, lambda: cancel_in(tmp_path, "lesson"))

    assert (answer.job_id, answer.state) == ("lesson", "cancelled")
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert status.state == "cancelled" and status.videos == []  # a job that could not have run lists no video
    assert next((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson/input/job.toml")).is_fifo()


def test_a_claimed_job_gets_a_request_and_the_worker_finishes_it_without_starting(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4"])

    answer = cancel_in(tmp_path, "lesson")

    assert (answer.job_id, answer.state) == ("lesson", "cancelling")
    request = cancel.read_request(claimed.path)
    assert request is not None and request.by == "test"

    def no_session(_engine: str | None) -> StandInSession:
        raise AssertionError("a cancelled job must not load an engine")

    context = JobContext(session_for=no_session, worker="w1@test", device="cpu")  # type: ignore[arg-type]
    result = process_job(claimed, tmp_path / "outbox", context)
    assert result.outcome is JobOutcome.CANCELLED
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert status.state == "cancelled" and [v.state for v in status.videos] == ["cancelled", "cancelled"]
    assert status.worker == "w1@test" and status.cancel == request
    assert not claimed.path.exists()
    assert list((tmp_path / "inbox" / ".heygemd" / "archive").glob("*/lesson/input/voice.wav"))


class CancelledDuring(StandInSession):
    """Renders a.mp4; while rendering b.mp4 the user cancels: the render waits on ``should_stop`` and stops."""

    def __init__(self, claim_path: Path) -> None:
        super().__init__()
        self.claim_path = claim_path

    def render(self, video: InputFile, audio: object, output: Path, **kwargs: object) -> RenderResult:
        if video.name != "b.mp4":
            return super().render(video, audio, output, **kwargs)  # type: ignore[arg-type]
        should_stop = kwargs["should_stop"]
        assert callable(should_stop) and not should_stop()
        cancel.write_request(self.claim_path, "test")
        for _batch in range(10_000_000):  # the render's batches: it looks at should_stop before each one
            if should_stop():
                raise Interrupted("stopped while rendering", path=video.path)
        raise AssertionError("the cancel request was never seen")


def test_a_cancel_while_rendering_keeps_the_done_videos_and_cancels_the_rest(tmp_path: Path) -> None:
    claimed = claim_job(tmp_path, ["voice.wav", "a.mp4", "b.mp4", "c.mp4"])
    session = CancelledDuring(claimed.path)
    context = JobContext(session_for=lambda _engine: session)  # type: ignore[arg-type, return-value]

    result = process_job(claimed, tmp_path / "outbox", context)

    assert result.outcome is JobOutcome.CANCELLED
    status = read_status(tmp_path / "outbox" / "lesson" / "status.json")
    assert status.state == "cancelled" and status.finished is not None
    assert [(v.input, v.state) for v in status.videos] == [
        ("a.mp4", "done"),
        ("b.mp4", "cancelled"),
        ("c.mp4", "cancelled"),
    ]
    assert status.videos[0].output == "a.mp4" and (tmp_path / "outbox" / "lesson" / "a.mp4").is_file()
    assert status.cancel is not None and status.cancel.by == "test"
    assert session.rendered == ["a.mp4"], "c.mp4 never started"
    assert not claimed.path.exists()


def test_the_watch_looks_at_the_file_at_most_every_interval(tmp_path: Path) -> None:
    now = [0.0]
    watch = cancel.CancelWatch(tmp_path, interval=1.0, clock=lambda: now[0])
    assert not watch()
    cancel.write_request(tmp_path, "test")
    assert not watch(), "looked again before the interval"
    now[0] = 1.0
    assert watch() and watch.seen


def test_a_request_file_cut_short_still_counts(tmp_path: Path) -> None:
    (tmp_path / CANCEL_FILE).write_bytes(b'{"requ')
    request = cancel.read_request(tmp_path)
    assert request is not None and request.by == ""
    assert cancel.read_request(tmp_path / "elsewhere") is None


def test_a_request_or_waiting_file_that_is_a_fifo_is_never_blocked_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / CANCEL_FILE)
    request = cancel.read_request(tmp_path)  # planted by someone who may cancel anyway: a request, by no one
    assert request is not None and request.by == ""
    os.mkfifo(tmp_path / WAITING_FILE)
    assert read_waiting(tmp_path) == {}


def test_a_request_for_a_claim_that_has_gone_is_file_not_found(tmp_path: Path) -> None:
    claimed = claims.claim(readiness.Candidate("x", _job(tmp_path / "inbox" / "x")), tmp_path / "state")
    assert claimed is not None
    claimed.path.rename(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        cancel.write_request(claimed.path, "test")


def _job(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "voice.wav").write_bytes(b"x")
    return folder


def test_cancel_events_carry_their_journal_message_ids(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from heygemd.logs import JournaldRenderer

    _job(tmp_path / "inbox" / "lesson")
    with capture_logs() as events:
        cancel_in(tmp_path, "lesson")
    by_name = {e["event"]: e for e in events}
    render = JournaldRenderer()
    for name in ("job.cancelled", "job.cancel_requested"):
        fields = render(None, "info", dict(by_name[name]))
        assert fields["MESSAGE_ID"] == logs.MESSAGE_IDS[name].hex


def test_a_waiting_job_the_share_will_not_let_go_is_a_clear_error_and_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from heygemd.errors import CancelRefused

    folder = _job(tmp_path / "inbox" / "copying")

    def busy(src: object, dst: object) -> None:  # an SMB client holding a file of the folder open
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src))

    monkeypatch.setattr(claims.os, "rename", busy)
    with pytest.raises(CancelRefused) as refused:
        cancel_in(tmp_path, "copying")
    assert refused.value.code == "CANCEL_REFUSED" and "'copying'" in refused.value.message and refused.value.hint
    assert (folder / "voice.wav").is_file(), "nothing lost: the job is still in the inbox"
    assert list((tmp_path / "inbox" / ".heygemd" / "claimed").iterdir()) == [], "no reservation left"
