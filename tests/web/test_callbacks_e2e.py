"""Workflow tools against the real daemon process (`heygemd run`, mouthwarp on tiny clips) and real servers on
127.0.0.1: a job submitted through the API from URLs renders and calls its callback_url back exactly once, signed
(people hear of it, and the process's metrics count it with its warm engine); a NAS job's callback that is still
pending when the daemon is SIGKILLed is delivered after the restart, with the same delivery id; an engine that fails
to load is told to people."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon.daemon_process import Daemon, Media
from tests.httpserver import Answer, Receiver, Seen, receiver
from tests.notify.test_callbacks import documented_verifier
from tests.web.webserver import TOKEN

pytestmark = pytest.mark.slow

SECRET = "callback-secret-0123456789"
ENV = {"HEYGEMD_NOTIFY__SIGNING_SECRET": SECRET, "HEYGEMD_WEB__TOKEN": TOKEN}


def configure(daemon: Daemon, server: Receiver, *, web: bool) -> None:
    """Callbacks and URL inputs from 127.0.0.1, messages for people to the server's /alerts, the web on any port."""
    with open(daemon.config, "a", encoding="utf-8") as cfg:
        if web:
            cfg.write('\n[web]\nenabled = true\nport = 0\nfetch_hosts = ["127.0.0.1"]\n')
        cfg.write(f'\n[notify]\ncallback_hosts = ["127.0.0.1"]\nurls = ["json://127.0.0.1:{server.port}/alerts"]\n')


def callbacks(daemon: Daemon, job: str) -> list[dict[str, Any]]:
    status = daemon.status(job)
    return list(status["callbacks"]) if status else []


def hooks(server: Receiver) -> list[Seen]:
    return [seen for seen in server.seen if seen.path.startswith("/hook")]


def test_a_job_from_urls_renders_and_is_called_back_once_signed(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    files = {"/speech.wav": media.speech.read_bytes(), "/anna.mp4": media.face_a.read_bytes()}

    def serve(seen: Seen) -> Answer:
        if seen.method == "GET":
            path = seen.path.partition("?")[0]
            return Answer(200, files[path]) if path in files else Answer(404)
        return Answer(200)

    with receiver(serve) as server:
        daemon = daemon_factory()
        configure(daemon, server, web=True)
        daemon.start(ENV)
        url = daemon.wait_for(
            lambda: next((e["url"] for e in daemon.events() if e.get("event") == "web.ready"), None), 90, "web.ready"
        ).rstrip("/")
        body = {
            "name": "lesson-01",
            "audio_url": server.url("/speech.wav"),
            "video_urls": [server.url("/anna.mp4")],
            "engine": "mouthwarp",
            "callback_url": server.url("/hook?token=s3cret"),
        }
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "run-1"}
        answer = httpx.post(f"{url}/api/jobs", json=body, headers=headers, timeout=60)
        assert answer.status_code == 201, answer.text
        assert httpx.post(f"{url}/api/jobs", json=body, headers=headers, timeout=60).status_code == 200

        status = daemon.wait_finished("lesson-01")
        assert status["state"] == "done" and (daemon.outbox / "lesson-01" / status["videos"][0]["output"]).is_file()
        delivered = daemon.wait_for(
            lambda: [c for c in callbacks(daemon, "lesson-01") if c["state"] == "delivered"], 60, "the delivery"
        )
        daemon.wait_for(lambda: any(seen.path == "/alerts" for seen in server.seen), 60, "the message for people")
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text

    (hook,) = hooks(server)
    (record,) = delivered
    assert record["host"] == "127.0.0.1" and record["attempts"] == 1 and "s3cret" not in json.dumps(status)
    assert hook.method == "POST" and hook.path == "/hook?token=s3cret"
    assert hook.headers["Heygemd-Event"] == "job.finished" and hook.headers["Heygemd-Delivery"] == record["delivery"]
    assert documented_verifier()(SECRET.encode(), hook.body, hook.headers["Heygemd-Signature"])
    sent = json.loads(hook.body)
    assert sent["job_id"] == "lesson-01" and sent["state"] == "done" and sent["videos"][0]["state"] == "done"
    assert list((daemon.state / "callbacks" / "pending").glob("*.json")) == [], "nothing left to send"
    (alert,) = [json.loads(seen.body) for seen in server.seen if seen.path == "/alerts"]
    assert alert["title"] == "lesson-01: done"
    series = metrics.splitlines()  # the process that renders and sends counts them
    assert 'heygemd_engine_loaded{device="cpu",engine="mouthwarp"} 1.0' in series
    assert 'heygemd_notifications_sent_total{channel="callback"} 1.0' in series
    assert 'heygemd_notifications_sent_total{channel="apprise"} 1.0' in series


def test_a_pending_delivery_survives_a_sigkill_and_is_sent_after_the_restart(
    daemon_factory: Callable[..., Daemon], media: Media
) -> None:
    answers = [503]  # the receiver is down for the first attempt

    def serve(seen: Seen) -> Answer:
        return Answer(answers.pop(0) if answers and seen.path.startswith("/hook") else 200)

    with receiver(serve) as server:
        daemon = daemon_factory()
        configure(daemon, server, web=False)
        daemon.start(ENV).wait_ready()
        job_toml = f'callback_url = "{server.url("/hook")}"\n'.encode()
        daemon.submit("lesson-02", {"voice.wav": media.speech, "a.mp4": media.face_a, "job.toml": job_toml})
        assert daemon.wait_finished("lesson-02")["state"] == "done"
        (pending,) = daemon.wait_for(
            lambda: [c for c in callbacks(daemon, "lesson-02") if c["state"] == "pending" and c["attempts"] == 1],
            60,
            "the first attempt to fail",
        )
        assert pending["last_error"] == "answered 503 Service Unavailable" and pending["next_attempt"]
        daemon.send(signal.SIGKILL)
        daemon.wait_exit(30)

        daemon.start(ENV)  # the next attempt is due 30 s after the first
        delivered = daemon.wait_for(
            lambda: [c for c in callbacks(daemon, "lesson-02") if c["state"] == "delivered"], 120, "the delivery"
        )

    first, second = hooks(server)
    assert first.headers["Heygemd-Delivery"] == second.headers["Heygemd-Delivery"] == pending["delivery"]
    assert first.body == second.body, "every attempt sends the same document"
    assert documented_verifier()(SECRET.encode(), second.body, second.headers["Heygemd-Signature"])
    assert delivered[0]["attempts"] == 2 and delivered[0]["delivery"] == pending["delivery"]
    assert json.loads(second.body)["state"] == "done"


def test_an_engine_that_fails_to_load_is_told_to_people(tmp_path: Path, daemon_factory: Callable[..., Daemon]) -> None:
    with receiver() as server:
        daemon = daemon_factory()
        configure(daemon, server, web=False)
        daemon.config.write_text(daemon.config.read_text().replace('name = "mouthwarp"', 'name = "wav2lip"'))
        daemon.start(ENV)
        assert daemon.wait_exit(90) == 1, "a daemon that cannot render stops (systemd starts it again)"
    (seen,) = server.seen
    message = json.loads(seen.body)
    assert message["title"].endswith(": an engine failed to load")
    assert message["message"].startswith("engine wav2lip on cpu: [BAD_CHECKPOINT]")
