"""What a process tells others (notify.notices), against real receivers on 127.0.0.1: a job that ends is queued for
its signed callback and its records land in its status.json as they go; a NAS job's callback to a host not allowed
is recorded as failed, never sent; a message for people goes out; a broker away for a minute is told once."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from heygemd.daemon.jobs import JobOptions
from heygemd.daemon.status import CallbackRecord, JobStatus, VideoStatus, read_status, record_callback, write_status
from heygemd.notify.alerts import BROKER_GRACE_S
from heygemd.notify.callbacks import signature
from heygemd.notify.notices import Notices
from heygemd.settings import NotifySettings, PathsSettings, Settings
from tests.daemon.daemon_process import wait_until
from tests.httpserver import receiver

SECRET = "callback-secret-0123456789"
T0 = 1_767_225_600.0


def settings(root: Path, port: int, *, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Settings:
    return Settings(
        paths=PathsSettings(inbox=root / "inbox", outbox=root / "outbox"),
        notify=NotifySettings(
            signing_secret=SecretStr(SECRET),
            callback_hosts=hosts,
            urls=(SecretStr(f"json://127.0.0.1:{port}/alerts"),),
        ),
    )


def finished(root: Path, job_id: str = "lesson-01") -> JobStatus:
    """A job as the worker leaves it: its final status.json in the outbox."""
    status = JobStatus(
        job_id=job_id, job_name=job_id, state="done", videos=[VideoStatus(input="anna.mp4", state="done")]
    )
    (root / "outbox" / job_id).mkdir(parents=True)
    return write_status(root / "outbox" / job_id / "status.json", status)


def test_a_job_that_ends_is_called_back_and_status_json_follows_the_delivery(tmp_path: Path) -> None:
    told: list[tuple[str, CallbackRecord]] = []
    with receiver() as server:
        notices = Notices(
            settings(tmp_path, server.port), on_callback=lambda job, r: told.append((job, r)), clock=lambda: T0
        )
        status = finished(tmp_path)
        with notices.start(callbacks=False):
            notices.job_ended(status, JobOptions(callback_url=server.url("/hook?token=s3cret")))
            (pending,) = read_status(tmp_path / "outbox" / "lesson-01" / "status.json").callbacks
            assert (pending.state, pending.attempts, pending.host) == ("pending", 0, "127.0.0.1")
            notices.callbacks.step()
            wait_until(lambda: any(seen.path == "/alerts" for seen in server.seen), 30, "the message for people")
    (hook,) = [seen for seen in server.seen if seen.path.startswith("/hook")]
    assert hook.body == status.model_dump_json().encode(), "the body is the job's final status document"
    t = int(T0)
    assert hook.headers["Heygemd-Signature"] == signature(SECRET.encode(), hook.body, t)
    (delivered,) = read_status(tmp_path / "outbox" / "lesson-01" / "status.json").callbacks
    assert (delivered.state, delivered.attempts, delivered.delivery) == ("delivered", 1, pending.delivery)
    assert hook.headers["Heygemd-Delivery"] == delivered.delivery
    assert [(job, r.state) for job, r in told] == [("lesson-01", "pending"), ("lesson-01", "delivered")]
    (alert,) = [json.loads(seen.body) for seen in server.seen if seen.path == "/alerts"]
    assert alert["title"] == "lesson-01: done"


def test_a_nas_jobs_callback_to_a_host_not_allowed_is_recorded_failed_and_never_sent(tmp_path: Path) -> None:
    with receiver() as server:
        notices = Notices(settings(tmp_path, server.port, hosts=("hooks.example.com",)), clock=lambda: T0)
        notices.job_ended(finished(tmp_path), JobOptions(callback_url=server.url("/hook")))
        assert notices.callbacks.pending() == [] and notices.callbacks.step() == []
    assert not [seen for seen in server.seen if seen.path == "/hook"]
    (record,) = read_status(tmp_path / "outbox" / "lesson-01" / "status.json").callbacks
    assert record.state == "failed" and record.attempts == 0 and record.host == "127.0.0.1"
    assert record.last_error is not None and record.last_error.startswith("CALLBACK_NOT_ALLOWED: ")
    assert "notify.callback_hosts" in record.last_error and record.finished is not None


def test_records_of_one_delivery_out_of_order_keep_the_furthest(tmp_path: Path) -> None:
    finished(tmp_path)
    path = tmp_path / "outbox" / "lesson-01" / "status.json"
    base = CallbackRecord(delivery="d" * 32, event="job.finished", host="127.0.0.1", state="pending")
    delivered = base.model_copy(update={"state": "delivered", "attempts": 1})
    record_callback(path, delivered)
    record_callback(path, base)  # the queued record, written late by the process that queued it
    assert read_status(path).callbacks == [delivered]
    retried = base.model_copy(update={"attempts": 1, "last_error": "answered 500"})
    other = base.model_copy(update={"delivery": "e" * 32})
    record_callback(path, other)
    assert [r.delivery for r in read_status(path).callbacks] == ["d" * 32, "e" * 32]
    record_callback(path, retried)
    assert read_status(path).callbacks[0] == delivered, "a retry record never undoes a delivery"
    assert record_callback(tmp_path / "outbox" / "gone" / "status.json", base) is None, "a deleted job is left alone"


def test_a_broker_away_for_a_minute_is_told_once(tmp_path: Path) -> None:
    problem = "redis://queue:6379/0: ConnectionError: Error 111 connecting to queue:6379. Connection refused."
    with receiver() as server:
        notices = Notices(settings(tmp_path, server.port))
        with notices.start(callbacks=False):
            for now in (100.0, 100.0 + BROKER_GRACE_S - 1, 100.0 + BROKER_GRACE_S, 100.0 + BROKER_GRACE_S + 30):
                notices.broker(problem, now)
            notices.broker(None, 200.0)  # back: a later outage is told again
            notices.broker(problem, 300.0)
    (seen,) = server.seen
    message = json.loads(seen.body)
    assert message["title"].endswith(": the broker is unreachable")
    assert message["message"].startswith(problem) and "heygemd check" in message["message"]
