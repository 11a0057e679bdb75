"""Notifications for people (heygemd.notify.alerts), sent by Apprise to a real JSON webhook on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from heygemd.daemon.status import ErrorStatus, JobStatus, VideoStatus
from heygemd.errors import ConfigError
from heygemd.notify.alerts import REPEAT_S, Alerts, Outage, job_message
from heygemd.settings import NotifySettings
from tests.daemon.daemon_process import wait_until
from tests.httpserver import Answer, receiver


def job(state: str = "partial") -> JobStatus:
    videos = [
        VideoStatus(input="anna.mp4", state="done"),
        VideoStatus(
            input="bob.mp4",
            state="failed",
            error=ErrorStatus(code="NO_FACE", message="lesson 01/bob.mp4: no face in 98% of frames"),
        ),
        VideoStatus(input="carl.mp4", state="done"),
    ]
    if state == "done":
        videos = [v.model_copy(update={"state": "done", "error": None}) for v in videos]
    return JobStatus(job_id="lesson 01-2", job_name="lesson 01", state=state, videos=videos)


def alerts(port: int, *events: str, public_url: str = "", clock: Callable[[], float] = time.monotonic) -> Alerts:
    """Alerts to the JSON webhook on ``port``, for ``events`` (default: the setting's default)."""
    url = SecretStr(f"json://127.0.0.1:{port}/heygemd")
    notify = NotifySettings(urls=(url,), events=events) if events else NotifySettings(urls=(url,))
    return Alerts(notify, public_url=public_url, clock=clock)


def test_a_finished_job_is_told_on_a_json_webhook() -> None:
    with receiver() as server:
        sender = alerts(server.port, public_url="https://lipsync.example.com")
        sender.start()
        try:
            assert sender.job_ended(job("partial"))
            wait_until(lambda: server.seen, 30, "the notification")
        finally:
            sender.stop()
    (seen,) = server.seen
    assert seen.method == "POST" and seen.path == "/heygemd"
    message = json.loads(seen.body)
    assert message["title"] == "lesson 01: partial" and message["type"] == "warning"
    assert message["message"].splitlines() == [
        "2 of 3 videos done, 1 failed.",
        "First error: NO_FACE: lesson 01/bob.mp4: no face in 98% of frames",
        "https://lipsync.example.com/jobs/lesson%2001-2",
    ]


def test_a_disk_full_event_is_told_once_an_hour() -> None:
    now = [1000.0]
    with receiver() as server:
        sender = alerts(server.port, clock=lambda: now[0])
        detail = "No space left on /srv/outbox while writing lesson-01/anna.mp4; free space there."
        assert sender.trouble("disk_full", detail)
        assert not sender.trouble("disk_full", detail), "the same trouble again within the hour"
        now[0] += REPEAT_S
        assert sender.trouble("disk_full", detail)
        sender.start()
        sender.stop()  # after the queued messages are sent
    assert len(server.seen) == 2
    message = json.loads(server.seen[0].body)
    assert message["title"].endswith(": disk full") and message["title"].startswith("heygemd on ")
    assert message["message"] == detail and message["type"] == "failure"


def test_events_choose_what_is_told() -> None:
    with receiver() as server:
        failures = alerts(server.port, "job.failed")
        assert not failures.job_ended(job("done"))
        assert failures.job_ended(job("partial"))
        assert not failures.trouble("engine_failed", "wav2lip: no checkpoint")
        everything = alerts(server.port, "job.finished", "job.failed")
        assert everything.job_ended(job("done")) and everything.job_ended(job("partial"))
        assert everything._queue.qsize() == 2, "a job matching both events is told once"


def test_a_done_job_without_public_url_has_no_link_and_no_error() -> None:
    message = job_message(job("done"), "")
    assert message.body == "3 of 3 videos done." and message.kind == "success"


def test_the_message_says_how_many_videos_the_check_flagged() -> None:
    flagged = job("done").model_copy(update={"videos_to_review": 2})
    assert "2 to review: the quality check flagged them" in job_message(flagged, "").body


def test_a_receiver_that_fails_is_logged_once_and_not_retried(capsys: pytest.CaptureFixture[str]) -> None:
    with receiver(lambda _: Answer(500)) as server:
        sender = alerts(server.port)
        assert not sender.send(job_message(job("failed"), ""))
    assert len(server.seen) == 1
    assert "notify.alert_failed" in capsys.readouterr().out


def test_a_full_queue_drops_the_message_instead_of_waiting() -> None:
    unsent = NotifySettings(urls=(SecretStr("json://127.0.0.1:9/x"),))  # no thread is started: nothing is sent
    sender = Alerts(unsent, public_url="", queue_size=1)
    assert sender.job_ended(job())
    assert not sender.job_ended(job()), "the queue is full: dropped at once"


def test_no_urls_sends_nothing_and_a_bad_url_is_a_config_error() -> None:
    quiet = Alerts(NotifySettings(), public_url="")
    assert not quiet.enabled and not quiet.job_ended(job()) and not quiet.trouble("disk_full", "x")
    for url in ("nosuchscheme://token-abc@host", "token-abc"):
        with pytest.raises(ConfigError, match=r"notify.urls\[0\]") as caught:
            Alerts(NotifySettings(urls=(SecretStr(url),)), public_url="")
        assert "token-abc" not in caught.value.message


def test_an_outage_is_told_once_after_its_grace() -> None:
    broker = Outage(after_s=60)
    assert not broker.update(False, 0) and not broker.update(False, 59)
    assert broker.update(False, 60)
    assert not broker.update(False, 600), "told once per outage"
    assert not broker.update(True, 601) and not broker.update(False, 602)
    assert broker.update(False, 662)
